//! Sample origins in a process of their own, for `scripts/soak.sh`: the proxy's memory is then
//! measured without the origins in it. Requests are not recorded, so these origins stay flat
//! too. Runs until killed.
//!
//! Usage: `soak_origins NAME=127.0.0.1:PORT [NAME=ADDR ...]`

use galion_edge_tools::origin::spawn_origin;
use std::net::SocketAddr;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut origins = Vec::new();
    for arg in std::env::args().skip(1) {
        let (name, addr) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=ADDR, got {arg:?}"))?;
        let addr: SocketAddr = addr.parse()?;
        let o = spawn_origin(name, addr).await?;
        o.set_recording(false);
        println!("origin {name} on {}", o.addr);
        origins.push(o);
    }
    if origins.is_empty() {
        return Err("usage: soak_origins NAME=127.0.0.1:PORT [NAME=ADDR ...]".into());
    }
    std::future::pending::<()>().await;
    Ok(())
}
