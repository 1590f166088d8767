//! WebSockets held open through the proxy for a whole soak run (`scripts/soak.sh`): each sends a
//! numbered message every few seconds and checks that the echo is that message. A WebSocket
//! that ends or answers wrong is counted and opened again. At the end it prints one line:
//!
//! `websockets: N held, M messages echoed, E wrong echoes, D ended early, R reopened`
//!
//! and exits 1 if any echo was wrong or any WebSocket ended before the end of the run.
//!
//! Usage: `soak_websockets ADDR HOST PATH CONNECTIONS SECONDS` (ADDR a loopback `IP:PORT`).

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// How often each WebSocket sends a message.
const EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct Counts {
    echoed: AtomicU64,
    wrong: AtomicU64,
    ended: AtomicU64,
    reopened: AtomicU64,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn open(addr: SocketAddr, host: &str, path: &str) -> Result<Ws, String> {
    let req = format!("ws://{host}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// One WebSocket's life until `end`: a message every [`EVERY`], its echo checked.
async fn hold(
    id: usize,
    addr: SocketAddr,
    host: String,
    path: String,
    end: Instant,
    c: Arc<Counts>,
) {
    let mut n = 0u64;
    // Spread the sends over the interval.
    tokio::time::sleep(EVERY.mul_f64((id % 100) as f64 / 100.0)).await;
    while Instant::now() < end {
        let mut ws = match open(addr, &host, &path).await {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("websocket {id}: cannot open: {e}");
                c.ended.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if n > 0 {
            c.reopened.fetch_add(1, Ordering::Relaxed);
        }
        loop {
            if Instant::now() + EVERY >= end {
                let _ = ws.close(None).await;
                return;
            }
            tokio::time::sleep(EVERY).await;
            n += 1;
            let text = format!("{id}:{n}");
            if ws.send(Message::text(text.clone())).await.is_err() {
                c.ended.fetch_add(1, Ordering::Relaxed);
                eprintln!("websocket {id}: ended before message {n}");
                break;
            }
            let echo = loop {
                match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                    other => break other,
                }
            };
            match echo {
                Ok(Some(Ok(m))) if m == Message::text(text) => {
                    c.echoed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(Ok(m))) => {
                    c.wrong.fetch_add(1, Ordering::Relaxed);
                    eprintln!("websocket {id}: message {n} echoed as {m:?}");
                }
                other => {
                    c.ended.fetch_add(1, Ordering::Relaxed);
                    eprintln!("websocket {id}: ended at message {n}: {other:?}");
                    break;
                }
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, host, path, conns, secs] = args.as_slice() else {
        return Err("usage: soak_websockets ADDR HOST PATH CONNECTIONS SECONDS".into());
    };
    let addr: SocketAddr = addr.parse()?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address").into());
    }
    let conns: usize = conns.parse()?;
    if conns > 10_000 {
        return Err("at most 10000 connections".into());
    }
    let end = Instant::now() + Duration::from_secs(secs.parse()?);
    let counts = Arc::new(Counts::default());
    let tasks: Vec<_> = (0..conns)
        .map(|id| {
            tokio::spawn(hold(
                id,
                addr,
                host.clone(),
                path.clone(),
                end,
                counts.clone(),
            ))
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let (echoed, wrong, ended, reopened) = (
        counts.echoed.load(Ordering::Relaxed),
        counts.wrong.load(Ordering::Relaxed),
        counts.ended.load(Ordering::Relaxed),
        counts.reopened.load(Ordering::Relaxed),
    );
    println!(
        "websockets: {conns} held, {echoed} messages echoed, {wrong} wrong echoes, \
         {ended} ended early, {reopened} reopened"
    );
    if wrong > 0 || ended > 0 {
        std::process::exit(1);
    }
    Ok(())
}
