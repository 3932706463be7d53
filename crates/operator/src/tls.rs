//! The cluster's TLS material (`spec.tls.secretName`, DESIGN.md `auth`): the user's Secret
//! read into the engine's [`TlsConfig`] (CA, certificate and key, PEM) and checked before any
//! node is contacted, so a wrong Secret is reported as what it is, not as connect errors.
//! Touches the API server. Key material is never logged, put in status or in Events.

use k8s_openapi::api::core::v1::Secret;
use kredis_api::ValidatedCluster;
use kredis_engine::admin::TlsConfig;
use kube::api::Api;

use crate::error::Error;
use crate::pod::{TLS_CA_KEY, TLS_CERT_KEY, TLS_KEY_KEY};

/// The TLS material, or why the spec cannot be served (the message says what to fix).
pub enum Tls {
    /// TLS off, or the material read and parsed.
    Ready(Option<TlsConfig>),
    /// The Secret is missing, lacks a key, or holds something that is not PEM.
    Invalid(String),
}

/// The TLS material every admin connection of `cluster` uses.
pub async fn material(client: &kube::Client, cluster: &ValidatedCluster) -> Result<Tls, Error> {
    let Some(name) = &cluster.tls else {
        return Ok(Tls::Ready(None));
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cluster.namespace);
    let found = secrets.get_opt(name).await.map_err(Error::kube(format!(
        "read Secret {}/{name}",
        cluster.namespace
    )))?;
    let Some(secret) = found else {
        return Ok(Tls::Invalid(format!(
            "spec.tls.secretName: Secret {name} does not exist in namespace {}: create it with keys {TLS_CERT_KEY}, {TLS_KEY_KEY} and {TLS_CA_KEY} (a cert-manager Certificate writes them)",
            cluster.namespace
        )));
    };
    Ok(match parse(&secret) {
        Ok(tls) => Tls::Ready(Some(tls)),
        Err(why) => Tls::Invalid(format!("spec.tls.secretName: Secret {name} {why}")),
    })
}

/// The three keys, checked as PEM; the error completes "Secret <name> ...".
fn parse(secret: &Secret) -> Result<TlsConfig, String> {
    let key = |k: &str| -> Result<Vec<u8>, String> {
        let from_data = secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| b.0.clone());
        let from_string = || {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(k))
                .map(|s| s.clone().into_bytes())
        };
        from_data
            .or_else(from_string)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("has no non-empty key {k}: add it (PEM)"))
    };
    let tls = TlsConfig {
        ca_cert: key(TLS_CA_KEY)?,
        client: Some((key(TLS_CERT_KEY)?, key(TLS_KEY_KEY)?)),
    };
    tls.check().map_err(|e| format!("cannot be used: {e}"))?;
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(keys: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                keys.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn a_complete_secret_is_read_and_each_fault_is_named() {
        let tls = kredis_engine::local::throwaway_tls(&["127.0.0.1"]).expect("certificates");
        let (cert, key) = tls.client.clone().expect("client certificate");
        let good = parse(&secret(&[
            (TLS_CA_KEY, &tls.ca_cert),
            (TLS_CERT_KEY, &cert),
            (TLS_KEY_KEY, &key),
        ]))
        .expect("a complete Secret");
        assert_eq!(good, tls);

        let e = parse(&secret(&[(TLS_CERT_KEY, &cert), (TLS_KEY_KEY, &key)])).expect_err("no CA");
        assert!(e.contains("has no non-empty key ca.crt"), "{e}");
        let e = parse(&secret(&[
            (TLS_CA_KEY, &tls.ca_cert),
            (TLS_CERT_KEY, &cert),
            (TLS_KEY_KEY, b""),
        ]))
        .expect_err("empty key");
        assert!(e.contains("tls.key"), "{e}");
        let e = parse(&secret(&[
            (TLS_CA_KEY, b"not pem"),
            (TLS_CERT_KEY, &cert),
            (TLS_KEY_KEY, &key),
        ]))
        .expect_err("CA not PEM");
        assert!(e.contains("CA certificate"), "{e}");
        let e = parse(&secret(&[
            (TLS_CA_KEY, &tls.ca_cert),
            (TLS_CERT_KEY, &cert),
            (
                TLS_KEY_KEY,
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
        ]))
        .expect_err("key not a key");
        assert!(e.to_lowercase().contains("private key"), "{e}");
    }
}
