//! The cluster's password (DESIGN.md `auth`): read from the named Secret, or from the
//! operator-managed `<name>-auth` Secret, created with a random password when missing; and the
//! record of the password the nodes were last moved to (`<name>-auth-applied`, see
//! [`crate::rotation`]). Touches the API server. The password is never logged, put in status
//! or in Events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kredis_api::{labels, AuthMode, ValidatedCluster};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rand::distr::{Alphanumeric, SampleString};
use tracing::info;

use crate::error::Error;
use crate::pod::{owner_reference, PASSWORD_KEY};

/// Length of a generated password: 32 alphanumerics are about 190 bits.
const PASSWORD_LEN: usize = 32;

/// The password, or why the spec cannot be served (the message says what to fix).
pub enum Password {
    /// Auth disabled or the password read.
    Ready(Option<String>),
    /// A user-named Secret is missing or has no usable `password` key.
    Invalid(String),
}

/// The password the cluster's nodes require.
pub async fn password(
    client: &kube::Client,
    cluster: &ValidatedCluster,
) -> Result<Password, Error> {
    let AuthMode::Secret { name, managed } = &cluster.auth else {
        return Ok(Password::Ready(None));
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cluster.namespace);
    let found = secrets.get_opt(name).await.map_err(Error::kube(format!(
        "read Secret {}/{name}",
        cluster.namespace
    )))?;
    let secret = match (found, managed) {
        (Some(s), _) => s,
        (None, true) => create(&secrets, cluster, name).await?,
        (None, false) => {
            return Ok(Password::Invalid(format!(
                "spec.auth.secretName: Secret {name} does not exist in namespace {}: create it with a key `password`, or remove secretName to let the operator create {}-auth",
                cluster.namespace, cluster.name
            )))
        }
    };
    match read(&secret) {
        Some(p) => Ok(Password::Ready(Some(p))),
        None => Ok(Password::Invalid(format!(
            "spec.auth.secretName: Secret {name} has no non-empty UTF-8 key `password`: add one"
        ))),
    }
}

fn read(secret: &Secret) -> Option<String> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(PASSWORD_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    let from_string = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(PASSWORD_KEY))
            .cloned()
    };
    from_data
        .or_else(from_string)
        .map(|p| p.trim_end_matches(['\n', '\r']).to_owned())
        .filter(|p| !p.is_empty() && !p.contains(char::is_whitespace))
}

async fn create(
    secrets: &Api<Secret>,
    cluster: &ValidatedCluster,
    name: &str,
) -> Result<Secret, Error> {
    let password = Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN);
    let secret = owned_secret(cluster, name, password.as_bytes());
    info!(secret = name, "creating the auth Secret");
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(s) => Ok(s),
        // Another replica (or a previous run) created it meanwhile: use theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => secrets.get(name).await.map_err(Error::kube(
            format!("read Secret {}/{name}", cluster.namespace),
        )),
        Err(e) => Err(Error::kube(format!(
            "create Secret {}/{name}",
            cluster.namespace
        ))(e)),
    }
}

/// The Secret recording the password every node was last moved to.
pub fn applied_secret_name(cluster: &ValidatedCluster) -> String {
    format!("{}-auth-applied", cluster.name)
}

/// The password the nodes were last moved to, when recorded.
pub async fn applied(
    client: &kube::Client,
    cluster: &ValidatedCluster,
) -> Result<Option<String>, Error> {
    let name = applied_secret_name(cluster);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cluster.namespace);
    let found = secrets.get_opt(&name).await.map_err(Error::kube(format!(
        "read Secret {}/{name}",
        cluster.namespace
    )))?;
    Ok(found.as_ref().and_then(read))
}

/// Records `password` as the one every node now runs with (server-side apply, owned by the
/// KRedis so it goes with it).
pub async fn record_applied(
    client: &kube::Client,
    cluster: &ValidatedCluster,
    password: &str,
) -> Result<(), Error> {
    let name = applied_secret_name(cluster);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cluster.namespace);
    let secret = owned_secret(cluster, &name, password.as_bytes());
    let mut body = serde_json::to_value(&secret).unwrap_or_default();
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    info!(secret = %name, "recording the password the nodes run with");
    secrets
        .patch(
            &name,
            &PatchParams::apply(crate::services::MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(Error::kube(format!(
            "record the applied password in Secret {}/{name}",
            cluster.namespace
        )))?;
    Ok(())
}

/// A Secret `name` holding `password`, labelled as the cluster's and owned by its KRedis.
fn owned_secret(cluster: &ValidatedCluster, name: &str, password: &[u8]) -> Secret {
    let mut secret_labels = labels::cluster_selector(&cluster.name);
    secret_labels.insert(labels::MANAGED_BY_KEY.into(), labels::MANAGED_BY.into());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(cluster.namespace.clone()),
            labels: Some(secret_labels),
            owner_references: owner_reference(cluster).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            PASSWORD_KEY.to_owned(),
            ByteString(password.to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}
