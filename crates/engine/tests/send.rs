//! The engine's futures are `Send + 'static` when they own their inputs: the operator runs
//! them on a multi-threaded runtime and kube-runtime requires Send reconcilers. This is a
//! compile-time check; the test body only builds the futures.
use kredis_engine::admin::{Admin, AdminConfig};
use kredis_engine::exec::{Ctx, ExecOptions, Executor};
use kredis_engine::plan::{Desired, Plan, Policy, Step};
use kredis_engine::reconcile::converge;

fn assert_send<T: Send + 'static>(_: T) {}

#[test]
fn engine_futures_are_send() {
    let admin = Admin::new(AdminConfig::default());
    let ctx = Ctx::new(
        admin.clone(),
        vec![],
        ExecOptions::default(),
        Default::default(),
    );
    assert_send(async move {
        let _ = Executor::run_step(&ctx, &Step::WaitConverged).await;
    });
    let executor = Executor::new(admin.clone(), ExecOptions::default());
    assert_send(async move {
        let _ = executor.execute(&Plan::default()).await;
    });
    assert_send(async move {
        let desired = Desired {
            masters: 3,
            replicas_per_master: 1,
        };
        let _ = converge(
            &admin,
            &ExecOptions::default(),
            &desired,
            &[],
            &Policy::default(),
        )
        .await;
    });
}
