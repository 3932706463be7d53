//! kubectl 1.32 conformance: apply (client-side and --server-side) without --validate=false,
//! get with printer columns, get -w, patch --type merge, wait --for=condition, delete pod,
//! delete node, and schema errors as kubectl shows them. Each invocation uses its own
//! --cache-dir so discovery is never stale.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{eventually, start, Harness};
use tokio::io::{AsyncBufReadExt, BufReader};

const KUBECTL: &str = "/usr/bin/kubectl";
static CACHE: AtomicUsize = AtomicUsize::new(0);

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn command(h: &Harness, args: &[&str]) -> tokio::process::Command {
    let cache = h
        .dir
        .path()
        .join(format!("kcache-{}", CACHE.fetch_add(1, Ordering::SeqCst)));
    let mut cmd = tokio::process::Command::new(KUBECTL);
    cmd.arg("--kubeconfig")
        .arg(h.cluster.kubeconfig_path())
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .kill_on_drop(true);
    cmd
}

async fn kubectl(h: &Harness, args: &[&str]) -> Out {
    let out = command(h, args).output().await.expect("run kubectl");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn ok(h: &Harness, args: &[&str]) -> String {
    let o = kubectl(h, args).await;
    assert!(o.ok, "kubectl {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
    o.stdout
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.kredis.io
spec:
  group: test.kredis.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
          status:
            type: object
            properties:
              phase: {type: string}
"#;

#[tokio::test]
async fn kubectl_apply_get_patch_wait_watch_delete() {
    let h = start(2, true, |_| {}).await;
    // kubectl 1.32 is part of the build machines' contract (issue 8): its absence is a failure.
    assert!(Path::new(KUBECTL).exists(), "{KUBECTL} is not installed");
    let dir = h.dir.path().to_owned();
    assert!(ok(&h, &["version"]).await.contains("Server Version"));

    // CRD via plain apply, then wait for Established.
    let crd = write(&dir, "crd.yaml", CRD);
    assert!(ok(&h, &["apply", "-f", &crd]).await.contains("created"));
    ok(
        &h,
        &[
            "wait",
            "--for=condition=Established",
            "crd/widgets.test.kredis.io",
            "--timeout=20s",
        ],
    )
    .await;

    // Custom resource: client-side apply, unchanged re-apply, change, server-side apply.
    let w = write(
        &dir,
        "w.yaml",
        "apiVersion: test.kredis.io/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n",
    );
    assert!(ok(&h, &["apply", "-f", &w])
        .await
        .contains("widget.test.kredis.io/w1 created"));
    assert!(ok(&h, &["apply", "-f", &w]).await.contains("unchanged"));
    let w2 = write(
        &dir,
        "w2.yaml",
        "apiVersion: test.kredis.io/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 4\n",
    );
    assert!(ok(&h, &["apply", "-f", &w2]).await.contains("configured"));
    let ssa = write(
        &dir,
        "w3.yaml",
        "apiVersion: test.kredis.io/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  size: 5\n",
    );
    assert!(ok(&h, &["apply", "--server-side", "-f", &ssa])
        .await
        .contains("serverside-applied"));
    ok(
        &h,
        &[
            "patch",
            "widget",
            "w1",
            "--subresource=status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"phase":"Ready"}}"#,
        ],
    )
    .await;
    let table = ok(&h, &["get", "widgets"]).await;
    let header = table.lines().next().unwrap_or("");
    assert!(
        header.contains("SIZE") && header.contains("PHASE") && header.contains("AGE"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("w1") && l.contains(" 4 ") && l.contains("Ready")),
        "{table}"
    );

    // Schema violations are refused naming the field.
    let bad = write(
        &dir,
        "bad.yaml",
        "apiVersion: test.kredis.io/v1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  size: 42\n",
    );
    let out = kubectl(&h, &["apply", "-f", &bad]).await;
    assert!(
        !out.ok && out.stderr.contains("spec.size"),
        "{}",
        out.stderr
    );

    // kubectl validates strictly by default: undeclared fields are refused, not pruned.
    let unknown = write(&dir, "unknown.yaml", "apiVersion: test.kredis.io/v1\nkind: Widget\nmetadata:\n  name: u\nspec:\n  size: 2\n  colour: red\n");
    let out = kubectl(&h, &["apply", "-f", &unknown]).await;
    assert!(
        !out.ok && out.stderr.contains("unknown field \"spec.colour\""),
        "{}",
        out.stderr
    );
    assert!(ok(&h, &["apply", "--validate=false", "-f", &unknown])
        .await
        .contains("created"));

    // A pod: apply, wait Ready, watch, merge patch, delete.
    let pod = write(&dir, "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  labels: {app: demo}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'echo hello-log; exec sleep 1000']\n");
    assert!(ok(&h, &["apply", "-f", &pod])
        .await
        .contains("pod/p1 created"));
    ok(
        &h,
        &["wait", "--for=condition=Ready", "pod/p1", "--timeout=20s"],
    )
    .await;
    assert!(ok(&h, &["apply", "-f", &pod]).await.contains("unchanged"));
    let pods = ok(&h, &["get", "pods", "-o", "wide"]).await;
    assert!(
        pods.lines().next().unwrap_or("").contains("READY")
            && pods.contains("Running")
            && pods.contains("127."),
        "{pods}"
    );

    // Logs, plain and followed.
    let logs = eventually("log line", Duration::from_secs(20), || async {
        let o = kubectl(&h, &["logs", "p1"]).await;
        o.stdout.contains("hello-log").then_some(o.stdout)
    })
    .await;
    assert_eq!(logs.trim(), "hello-log");
    let mut follow = command(&h, &["logs", "-f", "p1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut flines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), flines.next_line())
        .await
        .expect("followed log");
    assert_eq!(first.unwrap().as_deref(), Some("hello-log"));
    let _ = follow.kill().await;

    let mut watch = command(&h, &["get", "pods", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    ok(
        &h,
        &[
            "patch",
            "pod",
            "p1",
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"patched":"yes"}}}"#,
        ],
    )
    .await;
    let labels = ok(
        &h,
        &[
            "get",
            "pod",
            "p1",
            "-o",
            "jsonpath={.metadata.labels.patched}",
        ],
    )
    .await;
    assert_eq!(labels, "yes");
    assert!(ok(&h, &["delete", "pod", "p1"]).await.contains("deleted"));
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line.clone());
            if line.starts_with("DELETED") {
                break;
            }
        }
        seen
    })
    .await
    .expect("watch shows the deletion");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("ADDED") && l.contains("p1")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.starts_with("DELETED") && l.contains("p1")),
        "{seen:?}"
    );
    let _ = watch.kill().await;
    let out = kubectl(&h, &["get", "pod", "p1"]).await;
    assert!(!out.ok && out.stderr.contains("NotFound"), "{}", out.stderr);

    // Deleting a node.
    let nodes = ok(&h, &["get", "nodes"]).await;
    assert!(
        nodes.contains("dev-node-2") && nodes.contains("Ready"),
        "{nodes}"
    );
    assert!(ok(&h, &["delete", "node", "dev-node-2"])
        .await
        .contains("deleted"));
    eventually("node gone", Duration::from_secs(20), || async {
        let o = kubectl(&h, &["get", "nodes", "-o", "name"]).await;
        (o.ok && !o.stdout.contains("dev-node-2")).then_some(())
    })
    .await;

    // Bad input: unknown resource type, malformed manifest.
    let out = kubectl(&h, &["get", "frobnicators"]).await;
    assert!(!out.ok);
    let junk = write(
        &dir,
        "junk.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [not, a, map]\n",
    );
    assert!(!kubectl(&h, &["apply", "-f", &junk]).await.ok);
}
