//! order_service's homepage in a real browser: the whole system in-process, then
//! `browser/homepage.mjs` (playwright-core driving Debian's chromium) opens the page,
//! clicks "success", sees the saga's steps arrive and the order end `APPROVED`, and
//! saves a screenshot to `target/homepage.png` (a CI artefact).
//!
//! The pinned playwright-core goes into `target/browser-node`, installed from npm on
//! the first run (`npx playwright install` cannot run here: the browser is Debian's
//! `chromium`, installed with apt-get when it is missing). A machine without node,
//! npm or a way to install chromium fails this test rather than skipping it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use proto::order::v1::OrderState;
use system_tests::System;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser run: start, saga, screenshot.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

/// Debian's chromium at `CHROMIUM_PATH` or /usr/bin/chromium, installed with
/// apt-get (as root, or through passwordless sudo) when it is missing.
fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("CHROMIUM_PATH") {
        assert!(Path::new(&path).exists(), "CHROMIUM_PATH={path} does not exist");
        return PathBuf::from(path);
    }
    let path = PathBuf::from(CHROMIUM);
    if path.exists() {
        return path;
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo = !root && Command::new("sudo").args(["-n", "true"]).output().is_ok_and(|o| o.status.success());
    assert!(
        root || sudo,
        "{CHROMIUM} is missing and this user can neither apt-get (not root) nor sudo without a password: \
         install it with `sudo apt-get install -y --no-install-recommends chromium`"
    );
    let apt = |args: &[&str]| {
        let mut command = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            command.args(["-n", "apt-get"]);
        }
        command.env("DEBIAN_FRONTEND", "noninteractive").args(args).output()
    };
    let install = ["install", "-y", "--no-install-recommends", "chromium"];
    let installed = apt(&install).is_ok_and(|o| o.status.success())
        || (apt(&["update"]).is_ok_and(|o| o.status.success()) && apt(&install).is_ok_and(|o| o.status.success()));
    assert!(
        installed && path.exists(),
        "{CHROMIUM} is missing and `apt-get install chromium` failed; install Debian's chromium package"
    );
    path
}

/// `target/browser-node` with the pinned playwright-core of `browser/package.json`
/// (and its lock), installed once: a stamp file holds what was installed.
fn browser_node(root: &Path) -> PathBuf {
    let source = root.join("system_tests/browser");
    let dir = root.join("target/browser-node");
    let manifest = std::fs::read_to_string(source.join("package.json")).expect("browser/package.json");
    let lock = std::fs::read_to_string(source.join("package-lock.json")).expect("browser/package-lock.json");
    let wanted = format!("{manifest}\n{lock}");
    let stamp = dir.join("installed.stamp");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new("node").arg("--version"));
        std::fs::create_dir_all(&dir).expect("target/browser-node");
        std::fs::write(dir.join("package.json"), &manifest).expect("package.json");
        std::fs::write(dir.join("package-lock.json"), &lock).expect("package-lock.json");
        run(Command::new("npm").args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]).current_dir(&dir));
        std::fs::write(&stamp, wanted).expect("stamp");
    }
    dir
}

#[tokio::test]
async fn the_homepage_runs_the_success_scenario_in_a_browser_to_approved() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
    let (chromium, node_dir) = tokio::task::spawn_blocking({
        let root = root.clone();
        move || (chromium(), browser_node(&root))
    })
    .await
    .expect("browser set-up");

    let system = System::start("e2e-homepage", &[], |_| {}).await;
    let http = system.order.as_ref().expect("order_service").service.http_addr;
    let screenshot = root.join("target/homepage.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = root.join("system_tests/browser/homepage.mjs");
    let browser = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{http}/"))
        .arg(&screenshot)
        .env("FTGO_BROWSER_NODE", &node_dir)
        .env("CHROMIUM_PATH", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_TIMEOUT, browser).await;
    let text = match &output {
        Ok(Ok(output)) => {
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
        }
        Ok(Err(e)) => format!("cannot run node: {e}"),
        Err(_) => format!("the browser check did not finish within {BROWSER_TIMEOUT:?}"),
    };
    let order_id = text.split_whitespace().find_map(|word| word.strip_prefix("order_id=")).map(str::to_owned);
    let state = match &order_id {
        Some(id) => Some(system.get(id).await.state),
        None => None,
    };
    system.stop().await;

    println!("{text}");
    println!("screenshot: {}", screenshot.display());
    assert!(matches!(&output, Ok(Ok(o)) if o.status.success()), "the browser check failed:\n{text}");
    assert_eq!(state, Some(OrderState::Approved as i32), "the order the page started, as GetOrder shows it");
    assert!(screenshot.exists(), "no screenshot at {}", screenshot.display());
}
