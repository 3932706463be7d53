//! Turning a container spec into a local process: the environment (literal values, `$(VAR)`
//! expansion, downward API, secret/configMap key refs, envFrom), volumes materialised as per-pod
//! directories (emptyDir, configMap, secret) with mount paths rewritten in command, args, env
//! and workingDir, command resolution on this machine, and spawning in its own process group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::meta;
use crate::store::Store;

/// Everything needed to start (and restart) one container.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Resolved program path.
    pub program: PathBuf,
    /// Arguments after expansion and path rewriting.
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Log file (stdout and stderr appended).
    pub log: PathBuf,
}

/// Why a container cannot run here.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LaunchError {
    /// No command found on this machine for the image/command.
    #[error("{0}")]
    NotRunnable(String),
    /// A referenced Secret/ConfigMap key is missing.
    #[error("{0}")]
    Config(String),
}

/// The pod-level facts env and paths depend on.
#[derive(Debug, Clone)]
pub struct PodContext {
    /// The pod object.
    pub pod: Value,
    /// Pod IP.
    pub pod_ip: String,
    /// Node IP.
    pub host_ip: String,
    /// Node name.
    pub node: String,
    /// Per-pod directory.
    pub dir: PathBuf,
}

/// Images whose entrypoint we know, for containers without `command`.
fn image_entrypoint(image: &str) -> Option<&'static str> {
    let base = image.rsplit('/').next().unwrap_or(image);
    let repo = base.split([':', '@']).next().unwrap_or(base);
    match repo {
        "redis" | "redis-stack-server" | "valkey" => Some("redis-server"),
        _ => None,
    }
}

/// Finds `cmd` on PATH (or checks it when it has a slash).
pub fn resolve(cmd: &str) -> Option<PathBuf> {
    if cmd.contains('/') {
        let p = PathBuf::from(cmd);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

/// Kubernetes `$(VAR)` expansion: known variables replaced, `$$` escapes, unknown left as is.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            if bytes[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if bytes[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    if let Some(v) = env.get(name) {
                        out.push_str(v);
                        i += 3 + end;
                        continue;
                    }
                }
            }
        }
        // Push the whole UTF-8 character starting here.
        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn field_ref(ctx: &PodContext, path: &str) -> String {
    let pod = &ctx.pod;
    match path {
        "status.podIP" => ctx.pod_ip.clone(),
        "status.hostIP" => ctx.host_ip.clone(),
        "spec.nodeName" => ctx.node.clone(),
        "metadata.name" => meta::name(pod).to_owned(),
        "metadata.namespace" => meta::namespace(pod).to_owned(),
        "metadata.uid" => meta::uid(pod).to_owned(),
        "spec.serviceAccountName" => pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned(),
        other => {
            // metadata.labels['k'] / metadata.annotations['k']
            for (prefix, field) in [
                ("metadata.labels['", "labels"),
                ("metadata.annotations['", "annotations"),
            ] {
                if let Some(k) = other
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix("']"))
                {
                    return pod
                        .pointer(&format!("/metadata/{field}"))
                        .and_then(|m| m.get(k))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                }
            }
            String::new()
        }
    }
}

fn key_ref(
    store: &Store,
    ns: &str,
    r: &Value,
    secret: bool,
) -> Result<Option<String>, LaunchError> {
    let name = r.get("name").and_then(Value::as_str).unwrap_or("");
    let key = r.get("key").and_then(Value::as_str).unwrap_or("");
    let optional = r.get("optional").and_then(Value::as_bool) == Some(true);
    let kind = if secret { "secrets" } else { "configmaps" };
    let obj = store.get_key(kind, ns, name);
    let value = obj.as_ref().and_then(|o| {
        if secret {
            o.pointer("/data")
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        } else {
            o.pointer("/data")
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        }
    });
    match value {
        Some(v) => Ok(Some(v)),
        None if optional => Ok(None),
        None => Err(LaunchError::Config(format!(
            "couldn't find key {key} in {} {ns}/{name}",
            if secret { "Secret" } else { "ConfigMap" }
        ))),
    }
}

/// Builds the container environment in declaration order (later entries may refer to earlier
/// ones with `$(VAR)`).
pub fn environment(
    store: &Store,
    ctx: &PodContext,
    c: &Value,
) -> Result<Vec<(String, String)>, LaunchError> {
    let ns = meta::namespace(&ctx.pod).to_owned();
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |map: &mut BTreeMap<String, String>, k: String, v: String| {
        if !order.contains(&k) {
            order.push(k.clone());
        }
        map.insert(k, v);
    };
    for ef in c
        .get("envFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let prefix = ef.get("prefix").and_then(Value::as_str).unwrap_or("");
        for (field, kind, secret) in [
            ("configMapRef", "configmaps", false),
            ("secretRef", "secrets", true),
        ] {
            let Some(r) = ef.get(field) else { continue };
            let name = r.get("name").and_then(Value::as_str).unwrap_or("");
            let Some(obj) = store.get_key(kind, &ns, name) else {
                if r.get("optional").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                return Err(LaunchError::Config(format!("{kind} {ns}/{name} not found")));
            };
            for (k, v) in obj
                .get("data")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let raw = v.as_str().unwrap_or("");
                let val = if secret {
                    base64::engine::general_purpose::STANDARD
                        .decode(raw)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default()
                } else {
                    raw.to_owned()
                };
                set(&mut map, format!("{prefix}{k}"), val);
            }
        }
    }
    for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            Some(expand(v, &map))
        } else if let Some(vf) = e.get("valueFrom") {
            if let Some(p) = vf.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
                Some(field_ref(ctx, p))
            } else if let Some(r) = vf.get("secretKeyRef") {
                key_ref(store, &ns, r, true)?
            } else if let Some(r) = vf.get("configMapKeyRef") {
                key_ref(store, &ns, r, false)?
            } else {
                Some(String::new())
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            set(&mut map, name, v);
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| map.get(&k).map(|v| (k, v.clone())))
        .collect())
}

/// Materialises the pod's volumes; returns volume name → host directory.
pub fn volumes(store: &Store, ctx: &PodContext) -> Result<BTreeMap<String, PathBuf>, LaunchError> {
    let ns = meta::namespace(&ctx.pod).to_owned();
    let mut out = BTreeMap::new();
    for v in ctx
        .pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let dir = ctx.dir.join("volumes").join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| {
            LaunchError::Config(format!(
                "failed to create volume dir {}: {e}",
                dir.display()
            ))
        })?;
        for (field, kind, name_key, secret) in [
            ("configMap", "configmaps", "name", false),
            ("secret", "secrets", "secretName", true),
        ] {
            let Some(src) = v.get(field) else { continue };
            let obj_name = src.get(name_key).and_then(Value::as_str).unwrap_or("");
            let optional = src.get("optional").and_then(Value::as_bool) == Some(true);
            let Some(obj) = store.get_key(kind, &ns, obj_name) else {
                if optional {
                    continue;
                }
                return Err(LaunchError::Config(format!(
                    "{kind} {ns}/{obj_name} not found"
                )));
            };
            let items: Option<Vec<(String, String)>> =
                src.get("items").and_then(Value::as_array).map(|a| {
                    a.iter()
                        .map(|i| {
                            (
                                i.get("key")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .to_owned(),
                                i.get("path")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                                    .to_owned(),
                            )
                        })
                        .collect()
                });
            for (k, val) in obj
                .get("data")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let target = match &items {
                    Some(list) => match list.iter().find(|(key, _)| key == k) {
                        Some((_, path)) => path.clone(),
                        None => continue,
                    },
                    None => k.clone(),
                };
                let raw = val.as_str().unwrap_or("");
                let bytes = if secret {
                    base64::engine::general_purpose::STANDARD
                        .decode(raw)
                        .unwrap_or_default()
                } else {
                    raw.as_bytes().to_vec()
                };
                let file = dir.join(&target);
                if let Some(parent) = file.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                std::fs::write(&file, bytes).map_err(|e| {
                    LaunchError::Config(format!("failed to write {}: {e}", file.display()))
                })?;
            }
        }
        out.insert(name, dir);
    }
    Ok(out)
}

/// Rewrites container paths under mount points to their host directories.
pub fn rewrite(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut out = s.to_owned();
    for (mount, host) in mounts {
        if mount.len() <= 1 {
            continue;
        }
        let host = host.display().to_string();
        let mut result = String::new();
        let mut rest = out.as_str();
        while let Some(pos) = rest.find(mount.as_str()) {
            let after = &rest[pos + mount.len()..];
            let boundary_after = after.is_empty()
                || after.starts_with('/')
                || !after
                    .starts_with(|c: char| c.is_alphanumeric() || c == '-' || c == '_' || c == '.');
            let before_ok = pos == 0
                || !rest[..pos].ends_with(|c: char| c.is_alphanumeric() || c == '/' || c == '.');
            result.push_str(&rest[..pos]);
            if boundary_after && before_ok {
                result.push_str(&host);
            } else {
                result.push_str(mount);
            }
            rest = after;
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// Mounts of a container, longest mount path first.
pub fn mounts(c: &Value, vols: &BTreeMap<String, PathBuf>) -> Vec<(String, PathBuf)> {
    let mut m: Vec<(String, PathBuf)> = c
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|vm| {
            let path = vm
                .get("mountPath")
                .and_then(Value::as_str)?
                .trim_end_matches('/')
                .to_owned();
            let dir = vols.get(vm.get("name").and_then(Value::as_str)?)?;
            let sub = vm.get("subPath").and_then(Value::as_str).unwrap_or("");
            Some((
                path,
                if sub.is_empty() {
                    dir.clone()
                } else {
                    dir.join(sub)
                },
            ))
        })
        .collect();
    m.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    m
}

/// Plans how to run container `c` of the pod.
pub fn plan(
    store: &Store,
    ctx: &PodContext,
    c: &Value,
    vols: &BTreeMap<String, PathBuf>,
) -> Result<Launch, LaunchError> {
    let name = c.get("name").and_then(Value::as_str).unwrap_or("");
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let strs = |k: &str| -> Vec<String> {
        c.get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (command, args) = (strs("command"), strs("args"));
    let env = environment(store, ctx, c)?;
    let env_map: BTreeMap<String, String> = env.iter().cloned().collect();
    let m = mounts(c, vols);
    let mut argv: Vec<String> = if !command.is_empty() {
        command.into_iter().chain(args).collect()
    } else if let Some(ep) = image_entrypoint(image) {
        std::iter::once(ep.to_owned()).chain(args).collect()
    } else {
        args
    };
    argv = argv
        .iter()
        .map(|a| rewrite(&expand(a, &env_map), &m))
        .collect();
    let Some(first) = argv.first().cloned() else {
        return Err(LaunchError::NotRunnable(format!(
            "image {image:?} has no command that exists on this machine"
        )));
    };
    let program = resolve(&first).ok_or_else(|| {
        LaunchError::NotRunnable(format!(
            "command {first:?} of image {image:?} does not exist on this machine"
        ))
    })?;
    let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k, rewrite(&v, &m))).collect();
    let cwd = match c.get("workingDir").and_then(Value::as_str) {
        Some(w) if !w.is_empty() => {
            let p = PathBuf::from(rewrite(w, &m));
            if p.is_dir() {
                p
            } else {
                ctx.dir.clone()
            }
        }
        _ => ctx.dir.clone(),
    };
    Ok(Launch {
        program,
        args: argv[1..].to_vec(),
        env,
        cwd,
        log: ctx.dir.join(format!("{name}.log")),
    })
}

/// Spawns the process in its own process group with stdout/stderr appended to the log.
pub fn spawn(l: &Launch) -> std::io::Result<tokio::process::Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)?;
    let err = log.try_clone()?;
    let mut cmd = tokio::process::Command::new(&l.program);
    cmd.args(&l.args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("HOME", &l.cwd)
        .envs(l.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&l.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    cmd.spawn()
}

/// Runs an exec command (probe or hook) in the container's environment, with a timeout.
/// Returns whether it exited 0.
pub async fn exec(
    l: &Launch,
    argv: &[String],
    mounts: &[(String, PathBuf)],
    timeout: std::time::Duration,
) -> bool {
    let env_map: BTreeMap<String, String> = l.env.iter().cloned().collect();
    let argv: Vec<String> = argv
        .iter()
        .map(|a| rewrite(&expand(a, &env_map), mounts))
        .collect();
    let Some(prog) = argv.first().and_then(|p| resolve(p)) else {
        return false;
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .envs(l.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&l.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        _ => {
            if let Some(pid) = child.id() {
                super::signal_group(pid as i32, nix::sys::signal::Signal::SIGKILL);
            }
            false
        }
    }
}

/// The host directory of the pod (created).
pub fn ensure_dir(dir: &Path) -> Result<(), LaunchError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LaunchError::Config(format!("failed to create {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_and_rewrites() {
        let env: BTreeMap<String, String> = [("A".to_string(), "1".to_string())].into();
        assert_eq!(expand("x$(A)y$(B)$$(A)", &env), "x1y$(B)$(A)");
        let m = vec![("/data".to_string(), PathBuf::from("/tmp/p/data"))];
        assert_eq!(rewrite("--dir /data/x", &m), "--dir /tmp/p/data/x");
        assert_eq!(rewrite("/data", &m), "/tmp/p/data");
        assert_eq!(rewrite("/database", &m), "/database");
        assert_eq!(rewrite("dir=/data", &m), "dir=/tmp/p/data");
    }
}
