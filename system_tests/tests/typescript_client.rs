//! A TypeScript client generated from `proto/` the way README's "Clients in other
//! languages" shows (`buf generate` with `proto/buf.gen.ts.yaml`: Protobuf-ES and
//! Connect-ES) type-checks with `tsc --strict` and completes a saga against the
//! running system over gRPC: CreateOrder, WatchOrder to the terminal event, GetOrder
//! (`ts/client_check.ts`, run with tsx).
//!
//! The pinned npm packages of `ts/package.json` (and its lock), buf included, go into
//! `target/ts-client-node`, installed from npm on the first run; a machine without
//! node, npm or the npm registry fails this test rather than skipping it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use proto::order::v1::OrderState;
use system_tests::System;

/// The client's whole run: connect, saga, read-back.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// `target/ts-client-node` with the pinned packages of `ts/package.json` (and its
/// lock), installed once: a stamp file holds what was installed.
fn ts_node(root: &Path) -> PathBuf {
    let source = root.join("system_tests/ts");
    let dir = root.join("target/ts-client-node");
    let manifest = std::fs::read_to_string(source.join("package.json")).expect("ts/package.json");
    let lock = std::fs::read_to_string(source.join("package-lock.json")).expect("ts/package-lock.json");
    let wanted = format!("{manifest}\n{lock}");
    let stamp = dir.join("installed.stamp");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new("node").arg("--version"));
        std::fs::create_dir_all(&dir).expect("target/ts-client-node");
        std::fs::write(dir.join("package.json"), &manifest).expect("package.json");
        std::fs::write(dir.join("package-lock.json"), &lock).expect("package-lock.json");
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&dir));
        std::fs::write(&stamp, wanted).expect("stamp");
    }
    dir
}

/// A fresh directory under `node` holding the generated code (`gen/ts`), the check
/// script and its tsconfig, type-checked with tsc; node resolves the packages from
/// `node/node_modules`.
fn generate_and_type_check(root: &Path, node: &Path) -> PathBuf {
    let work = node.join(format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    for file in ["client_check.ts", "tsconfig.json"] {
        std::fs::copy(root.join("system_tests/ts").join(file), work.join(file)).expect(file);
    }
    let bin = node.join("node_modules/.bin");
    // buf finds the local plugin protoc-gen-es on PATH, as under `npx buf generate`.
    let path = std::env::join_paths(
        std::iter::once(bin.clone()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    run(Command::new(bin.join("buf"))
        .arg("generate")
        .arg(root.join("proto"))
        .arg("--template")
        .arg(root.join("proto/buf.gen.ts.yaml"))
        .arg("--output")
        .arg(&work)
        .env("PATH", &path));
    assert!(work.join("gen/ts/ftgo/order/v1/order_pb.ts").exists(), "buf generate wrote no order_pb.ts");
    assert!(work.join("gen/ts/ftgo/messaging/v1/options_pb.ts").exists(), "buf generate wrote no options_pb.ts");
    run(Command::new(bin.join("tsc")).arg("-p").arg(&work));
    work
}

#[tokio::test]
async fn a_generated_typescript_client_completes_a_saga_over_grpc() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let (node, work) = tokio::task::spawn_blocking({
        let root = root.clone();
        move || {
            let node = ts_node(&root);
            let work = generate_and_type_check(&root, &node);
            (node, work)
        }
    })
    .await
    .expect("TypeScript set-up");

    let system = System::start("e2e-typescript", &[], |_| {}).await;
    let addr = system.order.as_ref().expect("order_service").service.grpc_addr;
    let client = tokio::process::Command::new(node.join("node_modules/.bin/tsx"))
        .arg(work.join("client_check.ts"))
        .arg(addr.to_string())
        .current_dir(&work)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CLIENT_TIMEOUT, client).await;
    let text = match &output {
        Ok(Ok(output)) => {
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
        }
        Ok(Err(e)) => format!("cannot run tsx: {e}"),
        Err(_) => format!("the TypeScript client did not finish within {CLIENT_TIMEOUT:?}"),
    };
    // `typescript client: order <id> APPROVED after <n> events total=<minor>`
    let summary = text.lines().find_map(|line| line.strip_prefix("typescript client: order ")).map(str::to_owned);
    let order_id = summary.as_deref().and_then(|s| s.split_whitespace().next()).map(str::to_owned);
    let stored = match &order_id {
        Some(id) => Some(system.get(id).await),
        None => None,
    };
    system.stop().await;
    let _ = std::fs::remove_dir_all(&work);

    println!("{text}");
    assert!(matches!(&output, Ok(Ok(o)) if o.status.success()), "the TypeScript client failed:\n{text}");
    let summary = summary.expect("the client's summary line");
    assert!(summary.contains(" APPROVED after ") && summary.ends_with("total=2590"), "{summary}");
    let stored = stored.expect("the order the client created");
    assert_eq!(Some(&stored.order_id), order_id.as_ref(), "the order id, as the client and GetOrder see it");
    assert_eq!(stored.state, OrderState::Approved as i32, "the order the client created, as GetOrder shows it");
}
