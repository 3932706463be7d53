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
    info!(secret = name, "creating a password Secret");
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

/// The ACL user the exporter logs in as, with its own password that rotations never touch
/// (redis_exporter reads its password once, at start: with the default user's password it
/// would stop scraping at the first rotation until its pod is replaced).
pub const EXPORTER_USER: &str = "kredis-exporter";

/// What the exporter user may do: connect and read server state, nothing else (no key
/// reads or writes, no CONFIG SET, no admin commands).
pub const EXPORTER_ACL_RULES: &str = "on ~* &* -@all +@connection +info +config|get +cluster|info +cluster|nodes +client|list +client|info +slowlog|get +slowlog|len +latency|latest +latency|histogram +memory|stats +dbsize";

/// Whether the exporter gets its own user: it runs and the nodes require a password.
pub fn exporter_user_enabled(cluster: &ValidatedCluster) -> bool {
    cluster.exporter_image.is_some() && cluster.auth.secret_name().is_some()
}

/// The operator-managed Secret with the exporter user's password.
pub fn exporter_secret_name(cluster: &ValidatedCluster) -> String {
    format!("{}-exporter", cluster.name)
}

/// The exporter user's password, from `<name>-exporter` (created, owned by the KRedis, with
/// a random password when missing or unreadable); `None` when there is no exporter user.
pub async fn exporter_password(
    client: &kube::Client,
    cluster: &ValidatedCluster,
) -> Result<Option<String>, Error> {
    if !exporter_user_enabled(cluster) {
        return Ok(None);
    }
    let name = exporter_secret_name(cluster);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cluster.namespace);
    let found = secrets.get_opt(&name).await.map_err(Error::kube(format!(
        "read Secret {}/{name}",
        cluster.namespace
    )))?;
    let secret = match found {
        Some(s) if read(&s).is_some() => s,
        Some(_) => {
            // Ours, but edited into something unusable: a new password (nodes get it live).
            let password = Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN);
            apply(&secrets, cluster, &name, &password).await?
        }
        None => create(&secrets, cluster, &name).await?,
    };
    Ok(read(&secret))
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
    info!(secret = %name, "recording the password the nodes run with");
    apply(&secrets, cluster, &name, password).await.map(drop)
}

/// Writes Secret `name` with `password` (server-side apply, owned by the KRedis).
async fn apply(
    secrets: &Api<Secret>,
    cluster: &ValidatedCluster,
    name: &str,
    password: &str,
) -> Result<Secret, Error> {
    let secret = owned_secret(cluster, name, password.as_bytes());
    let mut body = serde_json::to_value(&secret).unwrap_or_default();
    body["apiVersion"] = "v1".into();
    body["kind"] = "Secret".into();
    secrets
        .patch(
            name,
            &PatchParams::apply(crate::services::MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(Error::kube(format!(
            "write Secret {}/{name}",
            cluster.namespace
        )))
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
