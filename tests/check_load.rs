//! `noslate check --load`: each function's code is loaded in a throw-away worker, and a syntax
//! error or a missing export is reported per function with a non-zero exit; plain `check` does
//! not load code.

mod common;

use common::{TempDir, binary, profile, require_node, require_python};
use serde_json::{Value, json};
use std::fs;
use std::path::Path;
use std::process::Command;

fn function(dir: &Path, name: &str, runtime: &str, file: &str, source: &str) -> Value {
    let code = dir.join(name);
    fs::create_dir_all(&code).expect("create the code dir");
    fs::write(code.join(file), source).expect("write the code");
    let mut p = profile(name, "echo");
    p["url"] = json!(code);
    p["runtime"] = json!(runtime);
    p
}

/// Runs `noslate check [extra]` on `functions`; returns the exit code, stdout and stderr.
fn check(dir: &Path, functions: &Value, extra: &[&str]) -> (i32, String, String) {
    let file = dir.join("functions.json");
    fs::write(&file, functions.to_string()).expect("write the functions file");
    let out = Command::new(binary())
        .arg("check")
        .args(extra)
        .arg("--functions")
        .arg(&file)
        .arg("--workdir")
        .arg(dir.join("work"))
        .output()
        .expect("run noslate check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn load_reports_each_function_that_does_not_load() {
    require_node();
    require_python();
    let dir = TempDir::new();
    let d = dir.path();
    let mut init = function(
        d,
        "noinit",
        "nodejs",
        "index.js",
        "exports.handler = (ctx, req, res) => res.end('ok');\n",
    );
    init["initializer"] = json!("index.init");
    let fns = json!([
        function(
            d,
            "good",
            "nodejs",
            "index.js",
            "exports.handler = (ctx, req, res) => res.end('ok');\n"
        ),
        function(
            d,
            "syntax",
            "nodejs",
            "index.js",
            "exports.handler = (ctx, req, res) => {\n  res.end('ok'\n};\n"
        ),
        function(
            d,
            "noexport",
            "nodejs",
            "index.js",
            "exports.other = () => {};\n"
        ),
        init,
        function(
            d,
            "pygood",
            "python3",
            "index.py",
            "def handler(event, context):\n    return 'ok'\n"
        ),
        function(
            d,
            "pysyntax",
            "python3",
            "index.py",
            "def handler(event, context)\n    return 'ok'\n"
        ),
        function(
            d,
            "pynoexport",
            "python3",
            "index.py",
            "def other(event, context):\n    return 'ok'\n"
        ),
        // Runs nothing but its import: an initializer or handler with side effects is not called.
        function(
            d,
            "sideeffect",
            "nodejs",
            "index.js",
            &format!(
                "exports.handler = () => {{ require('fs').writeFileSync({:?}, 'x'); }};\n",
                d.join("called").display().to_string()
            )
        ),
    ]);

    let (code, stdout, stderr) = check(d, &fns, &[]);
    assert_eq!(code, 0, "plain check does not load code; stderr: {stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");

    let (code, stdout, stderr) = check(d, &fns, &["--load"]);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    for good in ["good", "pygood", "sideeffect"] {
        assert!(
            stdout.contains(&format!("function {good}: ok")),
            "{good}: {stdout}"
        );
    }
    let failed = |name: &str| {
        stderr
            .lines()
            .find(|l| l.contains(&format!("function {name}: FAILED: ")))
            .unwrap_or_else(|| panic!("no failure line for {name} in:\n{stderr}"))
            .to_owned()
    };
    assert!(
        failed("syntax").contains("SyntaxError"),
        "{}",
        failed("syntax")
    );
    assert!(
        failed("syntax").contains("index.js:"),
        "names the file: {}",
        failed("syntax")
    );
    assert!(
        failed("noexport").contains("HandlerNotFound"),
        "{}",
        failed("noexport")
    );
    assert!(
        failed("noexport").contains("\"handler\""),
        "{}",
        failed("noexport")
    );
    assert!(
        failed("noinit").contains("InitializerNotFound"),
        "{}",
        failed("noinit")
    );
    assert!(
        failed("pysyntax").contains("SyntaxError"),
        "{}",
        failed("pysyntax")
    );
    assert!(
        failed("pynoexport").contains("HandlerNotFound"),
        "{}",
        failed("pynoexport")
    );
    assert!(!stdout.contains("configuration OK"), "{stdout}");
    assert!(!d.join("called").exists(), "the handler was called");
}
