//! The access log: one line per request with client, host, method, path, status, bytes,
//! duration, upstream and its time, and request id; JSON or combined; stdout or a file.
//! Also: the demo (`galion-edge-tools demo`) starts its origins and proxy from the embedded
//! local config.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::time::Duration;

fn config(origin: &Origin, access_log: &str) -> String {
    let body = format!(
        r#"
[upstreams.api]
backends = ["{}"]

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [ {{ path = "/", upstream = "api" }} ]
"#,
        origin.addr
    );
    base_config(false, &body).replace("[access_log]\npath = \"stdout\"", access_log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_on_stdout_carry_every_field() {
    let o = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&o, "[access_log]\nformat = \"json\"\npath = \"stdout\""),
    );
    let c = client();
    let r = c
        .get(format!("http://{}/api/slow?ms=50", proxy.plain_addr()))
        .header("host", "galion.app")
        .header("user-agent", "log-test/1.0")
        .header("referer", "https://galion.app/start")
        .header("x-request-id", "req-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body_len = r.bytes().await.unwrap().len();
    let refused = c
        .get(format!("http://{}/", proxy.plain_addr()))
        .header("host", "other.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 421);

    let log = proxy.wait_for_log(Duration::from_secs(5), |s| s.lines().count() >= 2);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "one line per request: {log}");
    let ok = &lines[0];
    assert_eq!(ok["client_ip"], "127.0.0.1");
    assert_eq!(ok["host"], "galion.app");
    assert_eq!(ok["site"], "galion.app");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["uri"], "/api/slow?ms=50");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["bytes_sent"], body_len);
    assert_eq!(ok["user_agent"], "log-test/1.0");
    assert_eq!(ok["referer"], "https://galion.app/start");
    assert_eq!(ok["request_id"], "req-abc-123");
    assert_eq!(ok["upstream"], o.addr.to_string());
    let urt = ok["upstream_time_ms"].as_f64().unwrap();
    let total = ok["duration_ms"].as_f64().unwrap();
    assert!(urt >= 50.0, "the origin slept 50ms: {urt}");
    assert!(total >= urt, "{total} < {urt}");

    let refused = &lines[1];
    assert_eq!(refused["status"], 421);
    assert!(refused["upstream"].is_null());
    assert!(refused["upstream_time_ms"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_lines_go_to_a_file() {
    let o = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(
            &o,
            &format!("[access_log]\nformat = \"combined\"\npath = {:?}", log_path),
        ),
    );
    let c = client();
    for i in 0..3 {
        let r = c
            .get(format!(
                "http://{}/page/{i}?q=\"quoted\"",
                proxy.plain_addr()
            ))
            .header("host", "galion.app")
            .header("user-agent", "evil\"agent")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut text = String::new();
    let found = eventually(Duration::from_secs(5), || {
        text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let n = text.lines().count();
        async move { n >= 3 }
    })
    .await;
    assert!(found, "{text}");
    assert!(
        proxy.stdout().is_empty(),
        "nothing on stdout when logging to a file"
    );
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(first.contains(" 200 "), "{first}");
    assert!(first.contains("host=\"galion.app\""), "{first}");
    assert!(first.contains(&format!("upstream={}", o.addr)), "{first}");
    assert!(
        first.contains("\"evil\\\"agent\""),
        "quotes are escaped: {first}"
    );
    assert!(first.contains(" rid="), "{first}");
    assert_eq!(text.lines().count(), 3);
}

#[test]
fn the_demo_serves_both_sites_from_the_embedded_config() {
    // The embedded local config, moved to free ports so the test never collides with a demo
    // someone is running.
    let dir = tempfile::tempdir().unwrap();
    let path = galion_edge_tools::demo::write_local_config(dir.path()).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    for port in [
        "8443", "8080", "8088", "9113", "3001", "8001", "8002", "3003", "8003", "8004",
    ] {
        text = text.replace(
            &format!("127.0.0.1:{port}\""),
            &format!("127.0.0.1:{}\"", free_port()),
        );
    }
    text = text.replace(
        "/tmp/galion-edge-local",
        &dir.path().join("local").display().to_string(),
    );
    std::fs::write(&path, &text).unwrap();
    let plain: u16 = text
        .lines()
        .find(|l| l.starts_with("http_proxy"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|p| p.trim_end_matches("\"]").parse().ok())
        .unwrap();

    let out = std::fs::File::create(dir.path().join("demo.out")).unwrap();
    let mut child = std::process::Command::new(tools_bin!())
        .args(["demo", "--configs"])
        .arg(dir.path())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(async {
        let c = client();
        let url = format!("http://127.0.0.1:{plain}/api/users");
        let up = eventually(Duration::from_secs(20), || {
            let c = c.clone();
            let url = url.clone();
            async move {
                c.get(&url)
                    .header("host", "galion.app")
                    .send()
                    .await
                    .is_ok()
            }
        })
        .await;
        assert!(up, "demo did not come up");
        let mut seen = Vec::new();
        for (host, path) in [
            ("galion.app", "/api/users"),
            ("galion.studio", "/socket.io/"),
            ("galion.app", "/"),
        ] {
            let v: serde_json::Value = c
                .get(format!("http://127.0.0.1:{plain}{path}"))
                .header("host", host)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            seen.push(v["service"].as_str().unwrap().to_string());
        }
        seen
    });
    let _ = child.kill();
    let _ = child.wait();
    let printed = std::fs::read_to_string(dir.path().join("demo.out")).unwrap();
    assert_eq!(
        result,
        ["app_api", "studio_realtime", "app_frontend"],
        "{printed}"
    );
    assert!(printed.contains("Try, in another terminal"), "{printed}");
}
