//! The `berth-proxy` command: `serve` (the default) runs the proxy,
//! `healthcheck` is the image's HEALTHCHECK (a GET of the admin endpoint's
//! `/healthz`; the image has no curl).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use berth_proxy::forward::Forwarder;
use berth_proxy::upstreams::Table;
use tokio::net::TcpListener;
use tokio::sync::watch;

const USAGE: &str = "\
usage: berth-proxy [serve] --listen PORT:UPSTREAM_PORT [--listen ...]
                   [--upstreams FILE] [--admin PORT] [--poll-ms MS]
       berth-proxy healthcheck [--admin PORT]

serve        listen on 0.0.0.0:PORT for each --listen and forward to
             UPSTREAM_PORT of the upstreams in FILE
             (default /etc/berth-proxy/upstreams.json), polled every MS
             milliseconds (default 100); the admin endpoint listens on
             0.0.0.0:PORT (default 9180)
healthcheck  GET http://127.0.0.1:ADMIN/healthz, exit 0 on 200";

const DEFAULT_UPSTREAMS: &str = "/etc/berth-proxy/upstreams.json";
const DEFAULT_ADMIN_PORT: u16 = 9180;
const DEFAULT_POLL_MS: u64 = 100;

struct Options {
    healthcheck: bool,
    listen: Vec<(u16, u16)>,
    upstreams: PathBuf,
    admin: u16,
    poll: Duration,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        healthcheck: false,
        listen: Vec::new(),
        upstreams: PathBuf::from(DEFAULT_UPSTREAMS),
        admin: DEFAULT_ADMIN_PORT,
        poll: Duration::from_millis(DEFAULT_POLL_MS),
    };
    let mut args = args.iter();
    let mut first = true;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "serve" if first => {}
            "healthcheck" if first => options.healthcheck = true,
            "--listen" => {
                let spec = value("--listen")?;
                let (listen, upstream) = spec
                    .split_once(':')
                    .and_then(|(l, u)| Some((l.parse().ok()?, u.parse().ok()?)))
                    .ok_or_else(|| format!("--listen {spec}: expected PORT:UPSTREAM_PORT"))?;
                options.listen.push((listen, upstream));
            }
            "--upstreams" => options.upstreams = PathBuf::from(value("--upstreams")?),
            "--admin" => {
                let port = value("--admin")?;
                options.admin = port
                    .parse()
                    .map_err(|_| format!("--admin {port}: not a port"))?;
            }
            "--poll-ms" => {
                let ms = value("--poll-ms")?;
                let ms: u64 = ms
                    .parse()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| format!("--poll-ms {ms}: not a positive number"))?;
                options.poll = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown argument {other}")),
        }
        first = false;
    }
    if !options.healthcheck && options.listen.is_empty() {
        return Err("serve needs at least one --listen PORT:UPSTREAM_PORT".into());
    }
    Ok(options)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("berth-proxy: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if options.healthcheck {
        return healthcheck(options.admin);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("berth-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    let table = Arc::new(Table::new());
    if let Err(e) = berth_proxy::load_file(&options.upstreams, &table) {
        eprintln!("berth-proxy: {e}; no upstream until it is written");
    }
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    let admin = bind(options.admin).await?;
    let admin_table = Arc::clone(&table);
    tasks.spawn(berth_proxy::serve(
        admin,
        move |req, _peer| berth_proxy::admin::handle(Arc::clone(&admin_table), req),
        stop.clone(),
    ));
    for (listen, upstream_port) in &options.listen {
        let listener = bind(*listen).await?;
        let forwarder = Arc::new(Forwarder::new(Arc::clone(&table), *upstream_port));
        tasks.spawn(berth_proxy::serve(
            listener,
            move |req, peer| {
                let forwarder = Arc::clone(&forwarder);
                async move { forwarder.handle(req, peer).await }
            },
            stop.clone(),
        ));
        eprintln!("berth-proxy: listening on 0.0.0.0:{listen}, forwarding to port {upstream_port}");
    }
    tasks.spawn(berth_proxy::watch_file(
        options.upstreams.clone(),
        Arc::clone(&table),
        options.poll,
        stop.clone(),
    ));

    wait_for_signal().await;
    eprintln!(
        "berth-proxy: stopping; open requests get up to {}s",
        berth_proxy::SHUTDOWN_GRACE.as_secs()
    );
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn bind(port: u16) -> Result<TcpListener, String> {
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// SIGTERM (`docker stop`) or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            eprintln!("berth-proxy: cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn healthcheck(port: u16) -> ExitCode {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let attempt = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    match attempt() {
        Ok(answer) if answer.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(answer) => {
            eprintln!(
                "berth-proxy healthcheck: {}",
                answer.lines().next().unwrap_or("no answer")
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("berth-proxy healthcheck: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_serve_and_healthcheck() {
        let o = parse_args(&args(&["--listen", "80:5000", "--listen", "81:9090"])).unwrap();
        assert_eq!(o.listen, [(80, 5000), (81, 9090)]);
        assert_eq!(o.admin, DEFAULT_ADMIN_PORT);
        let o = parse_args(&args(&["serve", "--listen", "80:5000", "--poll-ms", "50"])).unwrap();
        assert_eq!(o.poll, Duration::from_millis(50));
        assert!(parse_args(&args(&["healthcheck"])).unwrap().healthcheck);
        assert!(
            parse_args(&args(&["serve"])).is_err(),
            "nothing to listen on"
        );
        assert!(parse_args(&args(&["--listen", "80"])).is_err());
        assert!(parse_args(&args(&["--listen", "80:5000", "extra"])).is_err());
    }
}
