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
///
/// Secret and configMap volumes are laid out as the kubelet's atomic writer does: the files
/// live in a timestamped directory that `..data` points to, and each key is a symlink
/// `<key> -> ..data/<key>`, so [`refresh_volumes`] can swap every key at once.
pub fn volumes(store: &Store, ctx: &PodContext) -> Result<BTreeMap<String, PathBuf>, LaunchError> {
    let mut out = BTreeMap::new();
    for v in pod_volumes(ctx) {
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
        if let Some(files) = projected(store, ctx, v)? {
            write_atomically(&dir, &files)?;
        }
        out.insert(name, dir);
    }
    Ok(out)
}

/// Brings the pod's secret and configMap volumes up to date with their objects, as the
/// kubelet does on its sync loop (subPath mounts included here, which Kubernetes never
/// updates). Returns the names of the volumes whose content changed. A volume whose object
/// is gone or unreadable keeps its last content, as in Kubernetes.
pub fn refresh_volumes(store: &Store, ctx: &PodContext) -> Vec<String> {
    let mut changed = Vec::new();
    for v in pod_volumes(ctx) {
        let name = v.get("name").and_then(Value::as_str).unwrap_or("");
        let dir = ctx.dir.join("volumes").join(name);
        let Ok(Some(files)) = projected(store, ctx, v) else {
            continue;
        };
        if current_files(&dir) == files {
            continue;
        }
        match write_atomically(&dir, &files) {
            Ok(()) => changed.push(name.to_owned()),
            Err(e) => tracing::warn!(volume = name, error = %e, "failed to refresh a volume"),
        }
    }
    changed
}

fn pod_volumes(ctx: &PodContext) -> impl Iterator<Item = &Value> {
    ctx.pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The files a secret or configMap volume holds (path → bytes); `None` for other volumes and
/// for an optional object that does not exist.
fn projected(
    store: &Store,
    ctx: &PodContext,
    v: &Value,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, LaunchError> {
    let ns = meta::namespace(&ctx.pod);
    for (field, kind, name_key, secret) in [
        ("configMap", "configmaps", "name", false),
        ("secret", "secrets", "secretName", true),
    ] {
        let Some(src) = v.get(field) else { continue };
        let obj_name = src.get(name_key).and_then(Value::as_str).unwrap_or("");
        let optional = src.get("optional").and_then(Value::as_bool) == Some(true);
        let Some(obj) = store.get_key(kind, ns, obj_name) else {
            if optional {
                return Ok(None);
            }
            return Err(LaunchError::Config(format!(
                "{kind} {ns}/{obj_name} not found"
            )));
        };
        let items: Option<Vec<(&str, &str)>> =
            src.get("items").and_then(Value::as_array).map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i.get("key").and_then(Value::as_str).unwrap_or(""),
                            i.get("path").and_then(Value::as_str).unwrap_or(""),
                        )
                    })
                    .collect()
            });
        let mut files = BTreeMap::new();
        for (k, val) in obj
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let target = match &items {
                Some(list) => match list.iter().find(|(key, _)| key == k) {
                    Some((_, path)) => (*path).to_owned(),
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
            files.insert(target, bytes);
        }
        return Ok(Some(files));
    }
    Ok(None)
}

/// What `..data` of a projected volume holds now (empty when nothing was written yet).
fn current_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, rel: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(base.join(rel)) else {
            return;
        };
        for entry in entries.flatten() {
            let rel = rel.join(entry.file_name());
            let path = base.join(&rel);
            if path.is_dir() {
                walk(base, &rel, out);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.insert(rel.to_string_lossy().into_owned(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&dir.join(DATA_LINK), Path::new(""), &mut out);
    out
}

/// The symlink that names the current generation of a projected volume (the kubelet's name).
const DATA_LINK: &str = "..data";

/// Writes `files` as a new generation of the projected volume in `dir` and switches to it
/// with one `rename` of the `..data` symlink, so a reader sees the old set or the new set of
/// keys, never a mix (a certificate with the previous key, say).
fn write_atomically(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<(), LaunchError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        LaunchError::Config(format!("failed to {what} {}: {e}", path.display()))
    };
    let generation = format!(
        "..{}_{}",
        meta::now_rfc3339().replace([':', '-'], "_"),
        GENERATION.fetch_add(1, Ordering::Relaxed)
    );
    let gen_dir = dir.join(&generation);
    std::fs::create_dir_all(&gen_dir).map_err(|e| fail("create", &gen_dir, e))?;
    for (path, bytes) in files {
        let file = gen_dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail("create", parent, e))?;
        }
        std::fs::write(&file, bytes).map_err(|e| fail("write", &file, e))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&generation, &tmp).map_err(|e| fail("link", &tmp, e))?;
    let data = dir.join(DATA_LINK);
    let previous = std::fs::read_link(&data).ok();
    std::fs::rename(&tmp, &data).map_err(|e| fail("switch", &data, e))?;
    // One symlink per top-level entry, through `..data`; stale ones removed.
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_owned))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_LINK).join(top), &link)
                .map_err(|e| fail("link", &link, e))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..") && !tops.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    if let Some(old) = previous.filter(|old| *old != Path::new(&generation)) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
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
    fn projected_volumes_switch_every_key_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = |pairs: &[(&str, &str)]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        let first = files(&[("tls.crt", "cert 1"), ("tls.key", "key 1"), ("sub/x", "x")]);
        write_atomically(dir.path(), &first).expect("first");
        assert_eq!(current_files(dir.path()), first);
        // What a container reads: the key's path, through `..data`.
        let read = |k: &str| std::fs::read_to_string(dir.path().join(k)).expect("read");
        assert_eq!(read("tls.crt"), "cert 1");
        assert_eq!(read("sub/x"), "x");

        let second = files(&[("tls.crt", "cert 2"), ("tls.key", "key 2")]);
        write_atomically(dir.path(), &second).expect("second");
        assert_eq!(current_files(dir.path()), second);
        assert_eq!(
            (read("tls.crt"), read("tls.key")),
            ("cert 2".into(), "key 2".into())
        );
        assert!(
            !dir.path().join("sub").exists(),
            "a removed key stays visible"
        );
        // One generation is kept: the current one.
        let generations = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != DATA_LINK
            })
            .count();
        assert_eq!(generations, 1);
    }

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
