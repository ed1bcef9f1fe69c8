//! Other languages can use the API: a Python client generated from `proto/` with
//! grpcio-tools, and one that knows nothing but what server reflection tells it,
//! both complete a saga against the running system (`python/client_check.py`).
//!
//! The Python packages (pinned) go into a virtualenv under `target/`, created from
//! PyPI on the first run; a machine without python3 or PyPI fails this test rather
//! than skipping it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use system_tests::System;

const PACKAGES: [&str; 4] = ["grpcio==1.85.3", "grpcio-tools==1.85.1", "grpcio-reflection==1.85.1", "protobuf==7.36.2"];

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// The virtualenv with the pinned packages, created once.
fn venv(root: &Path) -> PathBuf {
    let venv = root.join("target/py-client-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("packages.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(&PACKAGES.join("\n")) {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(PACKAGES));
        std::fs::write(&stamp, PACKAGES.join("\n")).expect("stamp");
    }
    python
}

fn protos(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("proto dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(protos(&path));
        } else if path.extension().is_some_and(|e| e == "proto") {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn a_generated_python_client_and_a_reflection_only_client_complete_sagas() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let python = tokio::task::spawn_blocking({
        let root = root.clone();
        move || venv(&root)
    })
    .await
    .expect("venv");
    let generated = root.join(format!("target/py-client-gen-{}", std::process::id()));
    std::fs::create_dir_all(&generated).expect("gen dir");
    let proto_root = root.join("proto");
    let mut protoc = Command::new(&python);
    protoc
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto_root.display()))
        .arg(format!("--python_out={}", generated.display()))
        .arg(format!("--grpc_python_out={}", generated.display()))
        .args(protos(&proto_root.join("ftgo")));
    run(&mut protoc);

    let system = System::start("e2e-python", &[], |_| {}).await;
    let addr = system.order.as_ref().expect("order_service").service.grpc_addr;
    let script = root.join("system_tests/python/client_check.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(addr.to_string())
        .arg(&generated)
        .output()
        .await
        .expect("run the Python client");
    system.stop().await;
    let _ = std::fs::remove_dir_all(&generated);
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the Python clients failed:\n{text}");
    assert!(text.contains("generated client: order") && text.contains("reflection-only client: order"), "{text}");
    println!("{text}");
}
