//! The demo web app that berth deploys in its examples and tests.
//!
//! A deliberately tiny HTTP/1.1 server built on `std` only (one thread per
//! connection, `Connection: close`), so that it links statically and runs in a
//! `FROM scratch` image:
//!
//! * `GET /api/ping`           → `{"status":"ok","instance":"..."}`
//! * `GET /api/fibonacci/{n}`  → `{"n":n,"value":fib(n)}` for `n <= 180`, else 400
//! * anything else             → 404 (405 for a known path with another method)
//!
//! `demo-app healthcheck [URL]` is the image's HEALTHCHECK: a raw TCP GET that
//! exits 0 on a 200 answer and 1 otherwise (the image has no curl).

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

const DEFAULT_PORT: u16 = 5000;
/// Largest `n` served; fib(186) is the last Fibonacci number that fits a u128.
const MAX_FIB_N: u32 = 180;
/// Requests are tiny; refuse headers larger than this.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port = match port_from_env() {
        Ok(port) => port,
        Err(err) => {
            eprintln!("demo-app: {err}");
            return ExitCode::from(2);
        }
    };
    match args.first().map(String::as_str) {
        None | Some("serve") if args.len() <= 1 => serve_main(port),
        Some("healthcheck") if args.len() <= 2 => {
            let url = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| format!("http://127.0.0.1:{port}/api/ping"));
            match healthcheck(&url, HEALTHCHECK_TIMEOUT) {
                Ok(200) => ExitCode::SUCCESS,
                Ok(status) => {
                    eprintln!("demo-app healthcheck: {url} answered {status}");
                    ExitCode::FAILURE
                }
                Err(err) => {
                    eprintln!("demo-app healthcheck: {url}: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!(
                "usage: demo-app [serve]           listen on 0.0.0.0:$PORT (default {DEFAULT_PORT})\n       \
                 demo-app healthcheck [URL]  GET URL (default http://127.0.0.1:$PORT/api/ping), exit 0 on 200"
            );
            ExitCode::from(2)
        }
    }
}

fn port_from_env() -> Result<u16, String> {
    match std::env::var("PORT") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("PORT={v:?} is not a port number")),
        _ => Ok(DEFAULT_PORT),
    }
}

fn serve_main(port: u16) -> ExitCode {
    exit_on_termination_signals();
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("demo-app: cannot listen on 0.0.0.0:{port}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let instance = instance_name();
    let addr = listener.local_addr().map(|a| a.to_string());
    println!(
        "demo-app listening on http://{} (instance {instance})",
        addr.as_deref().unwrap_or("0.0.0.0:?")
    );
    let _ = io::stdout().flush();
    serve(listener, instance);
    ExitCode::SUCCESS
}

/// Accepts connections forever, one thread each.
fn serve(listener: TcpListener, instance: String) {
    let instance: &'static str = Box::leak(instance.into_boxed_str());
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let open = OpenConnection::new();
                let spawned = thread::Builder::new().name("conn".into()).spawn(move || {
                    let _open = open;
                    handle_connection(stream, instance)
                });
                if let Err(err) = spawned {
                    eprintln!("demo-app: cannot spawn a connection thread: {err}");
                }
            }
            // Transient accept errors (EMFILE, ECONNABORTED, ...): keep going.
            Err(err) => {
                eprintln!("demo-app: accept: {err}");
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn handle_connection(mut stream: TcpStream, instance: &str) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let response = match read_request_head(&mut stream) {
        Ok(head) => match parse_request_line(&head) {
            Some((method, target)) => route(method, target, instance),
            None => Response::error(400, "malformed request line"),
        },
        Err(err) if err.kind() == io::ErrorKind::InvalidData => {
            Response::error(431, "request head too large")
        }
        // The peer went away or timed out: nothing to answer.
        Err(_) => return,
    };
    let _ = stream.write_all(&response.to_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Reads up to the blank line ending the request head (the body is ignored).
fn read_request_head(stream: &mut impl Read) -> io::Result<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = find_subslice(&head, b"\r\n\r\n") {
            head.truncate(end);
            break;
        }
        if head.len() > MAX_REQUEST_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            // EOF: accept a head that was cut short (e.g. only a request line).
            if head.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `"GET /api/ping HTTP/1.1"` → `("GET", "/api/ping")`.
fn parse_request_line(head: &str) -> Option<(&str, &str)> {
    let line = head.lines().next()?;
    let mut parts = line.split_ascii_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return None;
    }
    Some((method, target))
}

#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    body: String,
    head_only: bool,
}

impl Response {
    fn json(status: u16, body: String) -> Self {
        Response {
            status,
            body,
            head_only: false,
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(status, format!("{{\"error\":{}}}", json_string(message)))
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD\r\n");
        }
        out.push_str("\r\n");
        if !self.head_only {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Unknown",
    }
}

/// The whole application: maps a request line to a response.
fn route(method: &str, target: &str, instance: &str) -> Response {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let known = path == "/api/ping"
        || path
            .strip_prefix("/api/fibonacci/")
            .is_some_and(|n| !n.contains('/'));
    if !known {
        return Response::error(404, "not found");
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return Response::error(405, "method not allowed");
    }
    let mut response = if path == "/api/ping" {
        Response::json(
            200,
            format!(
                "{{\"status\":\"ok\",\"instance\":{}}}",
                json_string(instance)
            ),
        )
    } else {
        let raw = &path["/api/fibonacci/".len()..];
        match parse_fib_n(raw) {
            Ok(n) => Response::json(200, format!("{{\"n\":{n},\"value\":{}}}", fibonacci(n))),
            Err(message) => Response::error(400, &message),
        }
    };
    response.head_only = head_only;
    response
}

fn parse_fib_n(raw: &str) -> Result<u32, String> {
    if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "n must be a whole number between 0 and {MAX_FIB_N}"
        ));
    }
    match raw.parse::<u32>() {
        Ok(n) if n <= MAX_FIB_N => Ok(n),
        _ => Err(format!("n must be at most {MAX_FIB_N}")),
    }
}

/// fib(0) = 0, fib(1) = 1; exact for every n <= 186.
fn fibonacci(n: u32) -> u128 {
    if n == 0 {
        return 0;
    }
    // Invariant: (a, b) = (fib(i - 1), fib(i)); stops at i = n, so it never
    // computes fib(n + 1), which would overflow for n = 186.
    let (mut a, mut b) = (0u128, 1u128);
    for _ in 1..n {
        (a, b) = (b, a + b);
    }
    b
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `$INSTANCE` if set, else the host name (the container id under Docker).
fn instance_name() -> String {
    if let Ok(v) = std::env::var("INSTANCE")
        && !v.trim().is_empty()
    {
        return v.trim().to_owned();
    }
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Connections being served (accepted and not yet answered).
static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Set by the SIGTERM / SIGINT handler.
static TERMINATING: AtomicBool = AtomicBool::new(false);
/// The longest a termination waits for open connections.
const SHUTDOWN_GRACE: Duration = IO_TIMEOUT;

/// Counts one connection in [`OPEN_CONNECTIONS`] while it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        OPEN_CONNECTIONS.fetch_add(1, Ordering::SeqCst);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// On SIGTERM / SIGINT: finish the requests being served (at most
/// [`SHUTDOWN_GRACE`]), then exit 0.
///
/// Why: in a container the app is PID 1, and the kernel drops signals whose
/// disposition is the default for a namespace's init process. Without a
/// handler `docker stop` waits its whole grace period (10 s) and then
/// SIGKILLs. `std` cannot install a handler, so we declare the libc
/// function we need ourselves instead of pulling in `libc` or
/// `signal-hook`: `signal(2)` (glibc gives it BSD semantics, i.e. a
/// persistent handler with SA_RESTART). The handler only sets an atomic
/// flag (async-signal-safe); a watcher thread sees it, waits until no
/// connection is open, and exits. A request a load balancer sent just
/// before the stop is answered, not cut off.
#[cfg(target_os = "linux")]
fn exit_on_termination_signals() {
    use std::ffi::c_int;
    const SIGINT: c_int = 2;
    const SIGTERM: c_int = 15;
    unsafe extern "C" {
        fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
    }
    extern "C" fn on_signal(_: c_int) {
        TERMINATING.store(true, Ordering::SeqCst);
    }
    for sig in [SIGINT, SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            signal(sig, on_signal);
        }
    }
    let watcher = thread::Builder::new().name("shutdown".into()).spawn(|| {
        while !TERMINATING.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
        }
        let deadline = std::time::Instant::now() + SHUTDOWN_GRACE;
        while OPEN_CONNECTIONS.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        std::process::exit(0);
    });
    if let Err(err) = watcher {
        eprintln!("demo-app: cannot start the shutdown thread: {err}");
    }
}

#[cfg(not(target_os = "linux"))]
fn exit_on_termination_signals() {}

/// GETs an `http://host[:port][/path]` URL over a raw TCP connection and
/// returns the status code.
fn healthcheck(url: &str, timeout: Duration) -> io::Result<u16> {
    let invalid = |msg: &str| io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned());
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| invalid("only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = split_host_port(authority).ok_or_else(|| invalid("bad host:port"))?;
    // A FROM scratch image has no NSS configuration: answer "localhost" here.
    let lookup_host = if host.eq_ignore_ascii_case("localhost") {
        "127.0.0.1"
    } else {
        host
    };
    let addrs: Vec<SocketAddr> = (lookup_host, port).to_socket_addrs()?.collect();
    let mut last_err = invalid("host resolved to no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(err) => last_err = err,
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: demo-app-healthcheck\r\nConnection: close\r\n\r\n"
    )?;
    stream.flush()?;
    let mut status_line = String::new();
    BufReader::new(stream)
        .take(1024)
        .read_line(&mut status_line)?;
    parse_status_line(&status_line)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        // [::1]:port
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((authority, 80)),
    }
    .filter(|(host, _)| !host.is_empty())
}

fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fibonacci_values() {
        assert_eq!(fibonacci(0), 0);
        assert_eq!(fibonacci(1), 1);
        assert_eq!(fibonacci(2), 1);
        assert_eq!(fibonacci(10), 55);
        assert_eq!(fibonacci(93), 12_200_160_415_121_876_738);
        assert_eq!(
            fibonacci(180),
            18_547_707_689_471_986_212_190_138_521_399_707_760
        );
        // The largest that fits a u128 still computes without overflow.
        assert_eq!(
            fibonacci(186),
            332_825_110_087_067_562_321_196_029_789_634_457_848
        );
    }

    #[test]
    fn ping_route() {
        let r = route("GET", "/api/ping", "web-1");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, r#"{"status":"ok","instance":"web-1"}"#);
        // Query strings are ignored.
        assert_eq!(route("GET", "/api/ping?x=1", "a").status, 200);
    }

    #[test]
    fn instance_is_json_escaped() {
        let r = route("GET", "/api/ping", "a\"b\\c\n");
        assert_eq!(r.body, r#"{"status":"ok","instance":"a\"b\\c\n"}"#);
    }

    #[test]
    fn fibonacci_route() {
        let r = route("GET", "/api/fibonacci/10", "x");
        assert_eq!((r.status, r.body.as_str()), (200, r#"{"n":10,"value":55}"#));
        let r = route("GET", "/api/fibonacci/180", "x");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            r#"{"n":180,"value":18547707689471986212190138521399707760}"#
        );
        assert_eq!(
            route("GET", "/api/fibonacci/0", "x").body,
            r#"{"n":0,"value":0}"#
        );
    }

    #[test]
    fn fibonacci_bad_n_is_400_json() {
        for n in [
            "181",
            "99999999999999999999",
            "-1",
            "+3",
            "abc",
            "1.5",
            "",
            "%31",
        ] {
            let r = route("GET", &format!("/api/fibonacci/{n}"), "x");
            assert_eq!(r.status, 400, "n = {n:?}");
            assert!(r.body.starts_with(r#"{"error":""#), "{}", r.body);
        }
    }

    #[test]
    fn unknown_paths_are_404() {
        for path in [
            "/",
            "/api",
            "/api/ping/",
            "/api/pong",
            "/api/fibonacci",
            "/api/fibonacci/1/2",
        ] {
            assert_eq!(route("GET", path, "x").status, 404, "{path}");
        }
    }

    #[test]
    fn other_methods() {
        assert_eq!(route("POST", "/api/ping", "x").status, 405);
        assert_eq!(route("DELETE", "/api/fibonacci/3", "x").status, 405);
        assert_eq!(route("POST", "/nope", "x").status, 404);
        let head = route("HEAD", "/api/ping", "x");
        assert_eq!(head.status, 200);
        let bytes = String::from_utf8(head.to_bytes()).unwrap();
        assert!(bytes.ends_with("\r\n\r\n"), "{bytes:?}");
    }

    #[test]
    fn response_bytes() {
        let r = Response::json(200, "{}".into());
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }

    #[test]
    fn request_line_parsing() {
        assert_eq!(
            parse_request_line("GET /api/ping HTTP/1.1\r\nHost: x"),
            Some(("GET", "/api/ping"))
        );
        assert_eq!(parse_request_line("GET /a HTTP/1.0"), Some(("GET", "/a")));
        assert_eq!(parse_request_line("GET /a"), None);
        assert_eq!(parse_request_line("GET a HTTP/1.1"), None);
        assert_eq!(parse_request_line("GET /a HTTP/2 x"), None);
        assert_eq!(parse_request_line(""), None);
    }

    #[test]
    fn request_head_reading() {
        let mut input: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        assert_eq!(
            read_request_head(&mut input).unwrap(),
            "GET / HTTP/1.1\r\nHost: a"
        );
        let mut cut: &[u8] = b"GET / HTTP/1.0\r\n";
        assert_eq!(read_request_head(&mut cut).unwrap(), "GET / HTTP/1.0\r\n");
        let mut empty: &[u8] = b"";
        assert!(read_request_head(&mut empty).is_err());
        let big = vec![b'a'; MAX_REQUEST_HEAD + 2048];
        let err = read_request_head(&mut big.as_slice()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn url_pieces() {
        assert_eq!(split_host_port("127.0.0.1:5000"), Some(("127.0.0.1", 5000)));
        assert_eq!(split_host_port("example"), Some(("example", 80)));
        assert_eq!(split_host_port("[::1]:8080"), Some(("::1", 8080)));
        assert_eq!(split_host_port("[::1]"), Some(("::1", 80)));
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("h:port"), None);
        assert_eq!(parse_status_line("HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line("HTTP/1.0 404\r\n"), Some(404));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH\r\n"), None);
    }

    /// End to end over loopback on an ephemeral port: the server loop and the
    /// healthcheck client against each other.
    #[test]
    fn serve_and_healthcheck_over_tcp() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || serve(listener, "test-instance".into()));
        let timeout = Duration::from_secs(10);

        let base = format!("http://127.0.0.1:{port}");
        assert_eq!(
            healthcheck(&format!("{base}/api/ping"), timeout).unwrap(),
            200
        );
        assert_eq!(
            healthcheck(&format!("{base}/api/fibonacci/7"), timeout).unwrap(),
            200
        );
        assert_eq!(
            healthcheck(&format!("{base}/api/fibonacci/x"), timeout).unwrap(),
            400
        );
        assert_eq!(
            healthcheck(&format!("{base}/missing"), timeout).unwrap(),
            404
        );
        assert_eq!(
            healthcheck(&format!("http://localhost:{port}/api/ping"), timeout).unwrap(),
            200
        );

        // The full response over a raw socket.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        s.write_all(b"GET /api/ping HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("Content-Type: application/json\r\n"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert!(
            text.ends_with(r#"{"status":"ok","instance":"test-instance"}"#),
            "{text}"
        );

        // Garbage gets a 400, not a hang.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        s.write_all(b"hello\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    }

    #[test]
    fn healthcheck_fails_on_closed_port_and_bad_url() {
        // Bind then drop to get a port that is (almost certainly) closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let timeout = Duration::from_secs(5);
        assert!(healthcheck(&format!("http://127.0.0.1:{port}/api/ping"), timeout).is_err());
        assert!(healthcheck("https://127.0.0.1/", timeout).is_err());
        assert!(healthcheck("http://:80/", timeout).is_err());
    }
}
