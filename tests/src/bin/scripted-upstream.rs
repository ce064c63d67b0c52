//! The scripted upstream as a process of its own, for tests that kill,
//! restart or stop (SIGSTOP) the MCP server:
//!
//!     scripted-upstream --port P [--standalone] [--strict-sessions] [--log FILE] [--tag TAG]
//!
//! Prints `listening on URL` once it listens. Streams are paced by their
//! `delay_ms` argument (there is no one to release them).
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)]

use shadowcat_tests::upstream::{Options, Scripted};

#[tokio::main]
async fn main() {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => options.port = args.next().unwrap().parse().unwrap(),
            "--standalone" => options.standalone = true,
            "--strict-sessions" => options.strict_sessions = true,
            "--log" => options.log = Some(args.next().unwrap().into()),
            "--tag" => options.tag = args.next(),
            other => panic!("unknown argument {other}"),
        }
    }
    let upstream = Scripted::start_with(options).await;
    println!("listening on {}", upstream.url);
    std::future::pending::<()>().await;
}
