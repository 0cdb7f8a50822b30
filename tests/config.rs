//! Start-up configuration: invalid function profiles are refused with one line per problem,
//! requests for functions that do not exist get FC's FunctionNotFound, and relative work and
//! log directories serve like absolute ones.

mod common;

use common::{
    Noslate, Req, TempDir, assert_function_error, assert_invoke_ok, fixture_dir, profile,
};
use serde_json::json;

#[test]
fn invalid_profiles_exit_non_zero_with_one_line_per_problem() {
    let mut no_handler = profile("first", "echo");
    no_handler.as_object_mut().unwrap().remove("handler");
    let mut no_name = profile("second", "echo");
    no_name.as_object_mut().unwrap().remove("name");
    let exited = Noslate::builder()
        .functions(&json!([no_handler, no_name]))
        .run_to_exit();
    assert!(!exited.status.success(), "exit status {:?}", exited.status);
    let lines: Vec<&str> = exited.stderr.lines().collect();
    let handler = lines
        .iter()
        .filter(|l| l.contains("functions[0].handler:"))
        .count();
    let name = lines
        .iter()
        .filter(|l| l.contains("functions[1].name:"))
        .count();
    assert_eq!(
        handler, 1,
        "one line about functions[0].handler; stderr:\n{}",
        exited.stderr
    );
    assert_eq!(
        name, 1,
        "one line about functions[1].name; stderr:\n{}",
        exited.stderr
    );
}

#[test]
fn functions_file_that_is_not_json_exits_non_zero() {
    let exited = Noslate::builder()
        .functions_raw("this is not json")
        .run_to_exit();
    assert!(!exited.status.success(), "exit status {:?}", exited.status);
    assert!(!exited.stderr.trim().is_empty(), "says why on stderr");
}

#[test]
fn functions_file_that_is_not_an_array_exits_non_zero() {
    let exited = Noslate::builder()
        .functions(&profile("single", "echo"))
        .run_to_exit();
    assert!(!exited.status.success(), "exit status {:?}", exited.status);
    assert!(!exited.stderr.trim().is_empty(), "says why on stderr");
}

#[test]
fn wrongly_typed_field_is_named() {
    let mut p = profile("typed", "echo");
    p["handler"] = json!(42);
    let exited = Noslate::builder().functions(&json!([p])).run_to_exit();
    assert!(!exited.status.success(), "exit status {:?}", exited.status);
    assert!(
        exited
            .stderr
            .lines()
            .any(|l| l.contains("functions[0].handler:")),
        "stderr names the field:\n{}",
        exited.stderr
    );
}

#[test]
fn valid_profile_is_accepted() {
    // The counterpart of the tests above: the same profile with nothing removed starts.
    let ns = Noslate::start(&json!([profile("ok", "echo")]));
    assert_eq!(ns.send(&Req::new("GET", "/healthz")).status, 200);
    assert!(fixture_dir("echo").join("index.js").exists());
}

#[test]
fn unknown_function_gives_404_function_not_found() {
    let ns = Noslate::start(&json!([profile("known", "echo")]));

    let resp = ns.send(&Req::new("POST", "/invoke").header("x-noslate-function", "ghost"));
    let body = assert_function_error(&resp, "FunctionNotFound");
    assert_eq!(body["errorMessage"], "function ghost not found");

    let resp = ns.send(&Req::new("POST", "/invoke/ghost").body(b"x"));
    let body = assert_function_error(&resp, "FunctionNotFound");
    assert_eq!(body["errorMessage"], "function ghost not found");

    let resp = ns.send(&Req::new("GET", "/page").header("x-noslate-function", "ghost"));
    let body = assert_function_error(&resp, "FunctionNotFound");
    assert_eq!(body["errorMessage"], "function ghost not found");

    // The known one still works.
    let resp = ns.send(&Req::new("POST", "/invoke/known").body(b"x"));
    assert_eq!(resp.status, 200, "body: {}", resp.brief());
}

#[test]
fn relative_work_and_log_directories_are_taken_from_where_the_runtime_starts() {
    // Workers run in their code directories: a work directory left relative would point
    // their bootstraps somewhere else, and every start would fail.
    let base = TempDir::new();
    let ns = Noslate::builder()
        .functions(&json!([profile("ok", "echo")]))
        .current_dir(base.path())
        .env("NOSLATE_WORKDIR", "relative-work")
        .env("NOSLATE_LOGDIR", "relative-logs")
        .start();
    assert_invoke_ok(&ns.send(&Req::new("POST", "/invoke").body(b"hi")));
    assert!(base.path().join("relative-work/noslated.sock").exists());
    assert!(base.path().join("relative-logs/ok").is_dir());
}
