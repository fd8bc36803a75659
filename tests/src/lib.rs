//! Black-box test harness: real `quiver` processes on loopback, driven by the SDK, the
//! CLI and a raw QUIC connection.
//!
//! - [`Broker`]: spawns `quiver serve` on a data directory with port-0 listeners, parses
//!   the addresses from its "listening on" line, and can SIGKILL, SIGTERM, SIGSTOP and
//!   restart it (on the same QUIC port, so SDK clients find it again).
//! - [`Broker::cli`]: runs the same binary as a client against the broker.
//! - [`RawConn`]: a QUIC connection that sends whatever bytes a test wants.
//! - [`eventually`]: bounded polling, for state that settles asynchronously.
//! - [`seeded_rng`]: randomness with a printed, replayable seed (`QUIVER_TEST_SEED`).
//!
//! The binary is `QUIVER_BIN` when set, else `quiver` next to the test executable's
//! `deps/` directory: run `cargo build --bin quiver` before the tests.

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quiver_sdk::{Client, ClientConfig, DecodedRecord, FetchOptions};

pub mod history;
pub mod netfault;
pub mod shaper;

pub use quiver_sdk;
pub use quiver_wire;

/// How long a broker gets to print its "listening on" line.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a CLI invocation or a graceful stop may take before the test gives up.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);

/// `n` UDP ports free on 127.0.0.1 at the time of the call.
pub fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("addr").port())
        .collect()
}

/// Brokers in a [`start_cluster`] cluster.
pub const CLUSTER_NODES: u32 = 3;

/// Starts a three-broker cluster under `root` (`node-1` .. `node-3`), all founding
/// seeds, with `env` on every broker. Node 1 makes the cluster's CA; the others get a
/// copy of its TLS material, as docs/operations.md describes.
pub fn start_cluster(root: &Path, env: &[(&str, &str)]) -> Vec<Broker> {
    start_cluster_each(root, env, &[&[], &[], &[]])
}

/// Like [`start_cluster`], with `node_env[i]` added to node `i + 1`'s environment.
pub fn start_cluster_each(
    root: &Path,
    env: &[(&str, &str)],
    node_env: &[&[(&str, &str)]; CLUSTER_NODES as usize],
) -> Vec<Broker> {
    let ports = free_ports(CLUSTER_NODES as usize);
    let seeds: Vec<String> = (1..=CLUSTER_NODES)
        .zip(&ports)
        .map(|(id, port)| format!("{id}@127.0.0.1:{port}"))
        .collect();
    let seeds = seeds.join(",");
    let dirs: Vec<_> = (1..=CLUSTER_NODES)
        .map(|id| root.join(format!("node-{id}")))
        .collect();
    let start = |index: usize| {
        let id = (index + 1).to_string();
        let mut all = vec![
            ("QUIVER_NODE_ID", id.as_str()),
            ("QUIVER_SEEDS", seeds.as_str()),
        ];
        all.extend_from_slice(env);
        all.extend_from_slice(node_env[index]);
        Broker::start_with(&dirs[index], &all, Some(ports[index]))
    };
    let mut brokers = vec![start(0)];
    for dir in &dirs[1..] {
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).expect("tls dir");
        for file in ["ca.pem", "ca.key", "server.pem", "server.key"] {
            std::fs::copy(dirs[0].join("tls").join(file), tls.join(file)).expect("copy tls");
        }
    }
    brokers.push(start(1));
    brokers.push(start(2));
    brokers
}

/// Runs blocking work from async tests without stalling the runtime's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The `quiver` binary under test.
pub fn quiver_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("QUIVER_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "QUIVER_BIN={} does not name a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe
        .parent()
        .expect("the test executable lives in a directory");
    let candidate = dir.join("..").join("quiver");
    assert!(
        candidate.is_file(),
        "the `quiver` binary is missing at {}: run `cargo build --bin quiver` first \
         (or point QUIVER_BIN at it)",
        candidate.display()
    );
    candidate
}

/// A seeded RNG. The seed comes from `QUIVER_TEST_SEED` or is random, and is printed so
/// a failure can be replayed.
pub fn seeded_rng(test: &str) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let seed = match std::env::var("QUIVER_TEST_SEED") {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .expect("QUIVER_TEST_SEED must be an unsigned integer"),
        Err(_) => rand::random::<u64>(),
    };
    eprintln!("[{test}] seed {seed} (replay with QUIVER_TEST_SEED={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Polls `f` every 50 ms until it returns `Some`, and returns that value. Panics with
/// `desc` after `max`. A bound so a hung test ends, not a timing assertion.
pub async fn eventually<T, F, Fut>(desc: &str, max: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + max;
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {max:?} waiting for: {desc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A running (or stopped) `quiver serve` process.
pub struct Broker {
    pub data_dir: PathBuf,
    pub quic_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    env: Vec<(String, String)>,
    host: Host,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Counts restarts; tags stderr lines so incarnations can be told apart.
    generation: usize,
}

/// Where a broker process runs: a network namespace (by name; `None` for the test's
/// own) and the address its listeners bind.
#[derive(Debug, Clone)]
pub struct Host {
    pub netns: Option<String>,
    pub ip: std::net::IpAddr,
}

impl Host {
    /// The test's own network, on 127.0.0.1.
    pub fn loopback() -> Host {
        Host {
            netns: None,
            ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    }
}

/// Why a broker did not come up.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "broker did not start (status {:?}); stderr:\n{}",
            self.status, self.stderr
        )
    }
}

fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.split("listening on ").nth(1)?;
    let quic = rest.split(" (QUIC)").next()?.trim().parse().ok()?;
    let admin = rest.split("admin on http://").nth(1)?;
    let admin = admin.split(';').next()?.trim().parse().ok()?;
    Some((quic, admin))
}

impl Broker {
    /// Starts a broker on `data_dir` with port-0 listeners and default settings.
    pub fn start(data_dir: &Path) -> Broker {
        Self::start_with(data_dir, &[], None)
    }

    /// Starts a broker with extra environment variables (`QUIVER_*` settings) and an
    /// optional fixed QUIC port. Panics with the broker's stderr if it does not start.
    pub fn start_with(data_dir: &Path, env: &[(&str, &str)], quic_port: Option<u16>) -> Broker {
        Self::start_on(&Host::loopback(), data_dir, env, quic_port)
    }

    /// As [`Broker::start_with`], on `host`: inside its network namespace, both
    /// listeners on its address.
    pub fn start_on(
        host: &Host,
        data_dir: &Path,
        env: &[(&str, &str)],
        quic_port: Option<u16>,
    ) -> Broker {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        match Self::spawn(host, data_dir, &env, quic_port, &stderr, 0) {
            Ok((child, quic_addr, admin_addr)) => Broker {
                data_dir: data_dir.to_owned(),
                quic_addr,
                admin_addr,
                env,
                host: host.clone(),
                child: Some(child),
                stderr,
                generation: 0,
            },
            Err(failure) => panic!("{failure}"),
        }
    }

    /// Spawns `quiver serve` and waits for its "listening on" line.
    pub fn try_spawn(
        data_dir: &Path,
        env: &[(&str, &str)],
        quic_port: Option<u16>,
    ) -> Result<Broker, StartFailure> {
        Self::try_spawn_on(&Host::loopback(), data_dir, env, quic_port)
    }

    /// As [`Broker::try_spawn`], on `host`: inside its network namespace, both
    /// listeners on its address.
    pub fn try_spawn_on(
        host: &Host,
        data_dir: &Path,
        env: &[(&str, &str)],
        quic_port: Option<u16>,
    ) -> Result<Broker, StartFailure> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (child, quic_addr, admin_addr) =
            Self::spawn(host, data_dir, &env, quic_port, &stderr, 0)?;
        Ok(Broker {
            data_dir: data_dir.to_owned(),
            quic_addr,
            admin_addr,
            env,
            host: host.clone(),
            child: Some(child),
            stderr,
            generation: 0,
        })
    }

    fn spawn(
        host: &Host,
        data_dir: &Path,
        env: &[(String, String)],
        quic_port: Option<u16>,
        stderr_lines: &Arc<Mutex<Vec<String>>>,
        generation: usize,
    ) -> Result<(Child, SocketAddr, SocketAddr), StartFailure> {
        let mut command = Command::new(quiver_bin());
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(SocketAddr::new(host.ip, quic_port.unwrap_or(0)).to_string())
            .arg("--admin-listen")
            .arg(SocketAddr::new(host.ip, 0).to_string())
            .env("RUST_LOG", "info,quinn=warn,quinn_proto=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Settings the caller did not ask for must not leak in from the environment.
        for (key, _) in std::env::vars() {
            if key.starts_with("QUIVER_") && key != "QUIVER_BIN" && key != "QUIVER_TEST_SEED" {
                command.env_remove(key);
            }
        }
        // A plugin thread descheduled on a loaded test machine can spend longer than
        // the default 100 ms budget of wall-clock time on a trivial call; tests that
        // exercise the budget set their own.
        command.env("QUIVER_PLUGIN_CALL_MS_MAX", "2000");
        for (k, v) in env {
            command.env(k, v);
        }
        // The namespace's handle stays open until the spawn returned.
        let _netns = match &host.netns {
            Some(name) => Some(enter_netns_on_exec(&mut command, name)?),
            None => None,
        };
        let mut child = command.spawn().map_err(|e| StartFailure {
            status: None,
            stderr: format!("cannot spawn {}: {e}", quiver_bin().display()),
        })?;
        let pipe = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel::<(SocketAddr, SocketAddr)>();
        let lines = Arc::clone(stderr_lines);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(addrs) = parse_listening(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addrs);
                }
                lines
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(format!("[{generation}] {line}"));
            }
        });
        let got = blocking(|| rx.recv_timeout(START_TIMEOUT));
        match got {
            Ok((quic, admin)) => Ok((child, quic, admin)),
            Err(_) => {
                // The reader ended (process exited) or the line never came.
                // A closed stderr means the process is exiting: give it a moment.
                let status = match wait_bounded(&mut child, Duration::from_secs(10)) {
                    Some(status) => Some(status),
                    None => {
                        let _ = child.kill();
                        child.wait().ok()
                    }
                };
                // Let the reader thread drain what is left.
                std::thread::sleep(Duration::from_millis(100));
                let text = stderr_lines
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .join("\n");
                Err(StartFailure {
                    status,
                    stderr: text,
                })
            }
        }
    }

    /// The process id of the running broker.
    pub fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("the broker is running");
        i32::try_from(child.id()).expect("pids fit i32")
    }

    /// Whether the broker process is still alive.
    /// Whether the process was started and not killed or stopped by the test.
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Everything the broker printed on stderr so far (all incarnations).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .join("\n")
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a pid we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            }
            let _ = blocking(|| child.wait());
        }
    }

    /// SIGTERM, then wait (bounded) for the exit and return its status.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("the broker is running");
        match wait_bounded(&mut child, PROCESS_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "broker did not exit within {PROCESS_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Freezes the broker process.
    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a frozen broker process.
    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Starts the broker again on the same data directory and QUIC port (SIGKILLing it
    /// first if it still runs). The admin port may change.
    pub fn restart(&mut self) {
        self.restart_moved(self.quic_addr.port(), &[]);
    }

    /// As [`Broker::restart`], listening on `port` instead, with `env` replacing the
    /// settings of the same names (a moved node's own seed entry, say).
    pub fn restart_moved(&mut self, port: u16, env: &[(&str, &str)]) {
        self.kill9();
        self.generation += 1;
        for (key, value) in env {
            self.env.retain(|(k, _)| k != key);
            self.env.push(((*key).to_owned(), (*value).to_owned()));
        }
        self.quic_addr.set_port(port);
        let env = self.env.clone();
        // The port was just released; retry in case the kernel has not let go, or a
        // client's socket took it for a moment (up to 30 s on a loaded machine).
        let mut last = None;
        for _ in 0..120 {
            match Self::spawn(
                &self.host,
                &self.data_dir,
                &env,
                Some(self.quic_addr.port()),
                &self.stderr,
                self.generation,
            ) {
                Ok((child, quic, admin)) => {
                    assert_eq!(quic, self.quic_addr, "restarted on another address");
                    self.child = Some(child);
                    self.admin_addr = admin;
                    return;
                }
                Err(failure) => {
                    let in_use = failure.stderr.contains("in use");
                    last = Some(failure);
                    if !in_use {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        panic!(
            "restart failed: {}",
            last.map(|f| f.to_string()).unwrap_or_default()
        );
    }

    /// `DATA_DIR/tls/ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.data_dir.join("tls").join("ca.pem")
    }

    /// A client config for this broker.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.quic_addr.to_string(), self.ca_cert())
    }

    /// An SDK client connected to this broker.
    pub async fn client(&self) -> Client {
        Client::connect(self.client_config())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.quic_addr))
    }

    /// `DATA_DIR/logs/<topic>-<partition>`.
    pub fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.data_dir
            .join("logs")
            .join(format!("{topic}-{partition}"))
    }

    /// The `.log` files of a partition, oldest first.
    pub fn log_files(&self, topic: &str, partition: u32) -> Vec<PathBuf> {
        segment_files(&self.partition_dir(topic, partition), "log")
    }

    /// Runs `quiver ARGS --broker ADDR --ca-cert CA` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, None)
    }

    /// As [`Broker::cli`], feeding `stdin` to the command.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut full: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        full.push("--broker".into());
        full.push(self.quic_addr.to_string());
        full.push("--ca-cert".into());
        full.push(self.ca_cert().display().to_string());
        run_quiver(&full, stdin, &[])
    }

    /// Sends a plain HTTP/1.1 GET to the admin listener; returns status and body.
    /// The value of one sample on `/metrics`, `name{labels}` written exactly as the
    /// broker renders it (labels in their order); 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "/metrics answered {status}");
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == sample).then(|| value.parse().ok())?
            })
            .unwrap_or(0.0)
    }

    /// The broker process's resident set size and its peak, in KiB.
    pub fn rss_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_addr, path)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.stderr();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(60);
            eprintln!(
                "---- broker stderr (last {} lines) ----\n{}\n----",
                lines.len() - from,
                lines[from..].join("\n")
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes `command` join the network namespace `name` (`/run/netns/NAME`, as `ip netns
/// add` makes it) between fork and exec. Returns the namespace's handle, which must stay
/// open until the process was spawned.
fn enter_netns_on_exec(command: &mut Command, name: &str) -> Result<std::fs::File, StartFailure> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let path = Path::new("/run/netns").join(name);
    let handle = std::fs::File::open(&path).map_err(|e| StartFailure {
        status: None,
        stderr: format!("cannot open the network namespace {}: {e}", path.display()),
    })?;
    let fd = handle.as_raw_fd();
    // SAFETY: setns(2) is async-signal-safe and touches only the child's own state; the
    // descriptor stays open in the parent (and so in the child) until spawn returns.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Ok(handle)
}

/// Waits for `child` to exit for at most `max`.
pub fn wait_bounded(child: &mut Child, max: Duration) -> Option<ExitStatus> {
    blocking(|| {
        let deadline = Instant::now() + max;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Runs the `quiver` binary with `args`, optional stdin and extra environment, bounded
/// by [`PROCESS_TIMEOUT`].
pub fn run_quiver(args: &[String], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(quiver_bin());
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("QUIVER_") {
            command.env_remove(key);
        }
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn quiver");
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("stdout is piped")));
    let err = read_all(Box::new(child.stderr.take().expect("stderr is piped")));
    let status = match wait_bounded(&mut child, PROCESS_TIMEOUT) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`quiver {}` did not finish within {PROCESS_TIMEOUT:?}",
                args.join(" ")
            );
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Sends a plain HTTP/1.1 GET to `addr`; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    blocking(|| {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect to admin");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("write request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read response");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status_line = text.lines().next().unwrap_or_default().to_owned();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status line in {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    })
}

/// Files `<20 digits>.<ext>` in `dir`, sorted by name (= base offset).
pub fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == ext)
                    && p.file_stem().is_some_and(|s| {
                        s.len() == 20 && s.to_string_lossy().bytes().all(|b| b.is_ascii_digit())
                    })
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

/// The base offset a segment file's name encodes.
pub fn segment_base(path: &Path) -> u64 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{} is not a segment file", path.display()))
}

/// A batch found in a segment file: where it sits and what it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    pub position: usize,
    pub len: usize,
    pub base_offset: u64,
    pub next_offset: u64,
}

/// Walks the batches of a segment file's bytes by their headers. Stops at the first
/// header that does not fit.
pub fn batch_spans(data: &[u8]) -> Vec<BatchSpan> {
    use quiver_wire::batch::BatchHeader;
    let mut spans = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let Ok(header) = BatchHeader::parse(&data[at..]) else {
            break;
        };
        let len = header.total_bytes();
        if at + len > data.len() {
            break;
        }
        spans.push(BatchSpan {
            position: at,
            len,
            base_offset: header.base_offset,
            next_offset: header.next_offset(),
        });
        at += len;
    }
    spans
}

/// Every record of a partition from `from` up to the high watermark seen at the start.
pub async fn fetch_all(
    client: &Client,
    topic: &str,
    partition: u32,
    from: u64,
) -> Vec<DecodedRecord> {
    let end = client
        .list_offsets(topic, partition, quiver_sdk::OffsetSpec::Latest)
        .await
        .unwrap_or_else(|e| panic!("list_offsets {topic}/{partition}: {e}"))
        .log_end_offset;
    fetch_range(client, topic, partition, from, end).await
}

/// Every record of a partition in `from..end`.
pub async fn fetch_range(
    client: &Client,
    topic: &str,
    partition: u32,
    from: u64,
    end: u64,
) -> Vec<DecodedRecord> {
    let options = FetchOptions::default()
        .max_wait(Duration::from_millis(100))
        .min_bytes(1)
        .max_bytes(4 * 1024 * 1024);
    let mut out = Vec::new();
    let mut offset = from;
    while offset < end {
        let fetched = client
            .fetch(topic, partition, offset, &options)
            .await
            .unwrap_or_else(|e| panic!("fetch {topic}/{partition} at {offset}: {e}"));
        assert!(
            fetched.next_offset > offset,
            "fetch {topic}/{partition} at {offset} made no progress (high watermark {}, log end {})",
            fetched.high_watermark,
            fetched.log_end_offset
        );
        for record in fetched.records {
            if record.offset < end {
                out.push(record);
            }
        }
        offset = fetched.next_offset;
    }
    out
}

/// A value of exactly `len` bytes starting with `prefix`, padded with seeded letters.
pub fn padded_value(prefix: &str, len: usize, rng: &mut impl rand::Rng) -> Bytes {
    let mut v = BytesMut::with_capacity(len.max(prefix.len()));
    v.extend_from_slice(prefix.as_bytes());
    while v.len() < len {
        v.extend_from_slice(&[b'a' + rng.gen_range(0..26u8)]);
    }
    v.freeze()
}

/// A QUIC connection speaking `quiver/1`, for tests that send bytes the SDK would not.
pub struct RawConn {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
}

impl RawConn {
    /// Connects to `addr`, trusting the CA at `ca`.
    pub async fn connect(addr: SocketAddr, ca: &Path) -> RawConn {
        Self::try_connect_from("127.0.0.1".parse().expect("addr"), addr, ca)
            .await
            .expect("handshake")
    }

    /// Connects from the loopback address `from` (any of 127.0.0.0/8), so a test can
    /// play a second client host; `Err` when the broker refuses the connection.
    pub async fn try_connect_from(
        from: std::net::IpAddr,
        addr: SocketAddr,
        ca: &Path,
    ) -> Result<RawConn, quinn::ConnectionError> {
        let pem = std::fs::read(ca).expect("read CA");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.expect("CA PEM parses")).expect("add CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        crypto.alpn_protocols = vec![quiver_wire::ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("QUIC TLS");
        let mut endpoint =
            quinn::Endpoint::client(SocketAddr::new(from, 0)).expect("client endpoint");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let conn = endpoint
            .connect(addr, "127.0.0.1")
            .expect("connect")
            .await?;
        Ok(RawConn { endpoint, conn })
    }

    /// Sends `bytes` on a new bidirectional stream, finishes it, and reads one response
    /// frame: `(status, body)`. `Err` when the stream ends without a whole frame.
    pub async fn round_trip(&self, bytes: &[u8]) -> Result<(u16, Bytes), String> {
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(bytes).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        read_response(&mut recv).await
    }

    /// Closes the connection with an application error, abruptly.
    pub fn close_abruptly(&self) {
        self.conn.close(42u32.into(), b"test hangs up");
    }
}

/// Reads one response frame off `recv`: `(status, body)`.
pub async fn read_response(recv: &mut quinn::RecvStream) -> Result<(u16, Bytes), String> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| format!("reading the length prefix: {e}"))?;
    let len = u32::from_be_bytes(prefix) as usize;
    if !(2..=64 * 1024 * 1024).contains(&len) {
        return Err(format!("response frame length {len} out of bounds"));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| format!("reading {len} body bytes: {e}"))?;
    let status = u16::from_be_bytes([body[0], body[1]]);
    Ok((status, Bytes::from(body).slice(2..)))
}

/// The error message of an error response body (`[len:2][utf8]`).
pub fn error_message(body: &[u8]) -> String {
    if body.len() < 2 {
        return String::new();
    }
    let len = u16::from_be_bytes([body[0], body[1]]) as usize;
    String::from_utf8_lossy(&body[2..(2 + len).min(body.len())]).into_owned()
}

/// Waits (bounded) until the high watermark of a partition reaches `end`, for reads
/// right after an acknowledgement. See `acknowledged_batch_is_visible_to_the_next_request`
/// for the test that holds the broker to read-your-writes without this wait.
pub async fn wait_visible(client: &Client, topic: &str, partition: u32, end: u64) {
    eventually(
        &format!("{topic}/{partition} high watermark to reach {end}"),
        Duration::from_secs(60),
        || async move {
            let latest = client
                .list_offsets(topic, partition, quiver_sdk::OffsetSpec::Latest)
                .await
                .ok()?;
            (latest.offset.unwrap_or(0) >= end).then_some(())
        },
    )
    .await;
}

/// WAT plugins written from `plugins/ABI.md` (the broker takes the text format too).
/// The text lives in `plugins/testdata`, shared with the plugin host's tests.
pub mod wat {
    /// Memory, the ABI version, and a bump allocator the transformation resets.
    pub const PRELUDE: &str = include_str!("../../plugins/testdata/prelude.wat");

    /// A filter that traps on every batch.
    pub const TRAP_FILTER: &str =
        r#"(func (export "filter") (param i32 i32) (result i64) unreachable)"#;

    /// A filter whose bitmap bytes are all `fill`: 255 keeps every record, 0x55 keeps
    /// positions 0, 2, 4, ... of each batch.
    pub fn filter_filling(fill: u8) -> String {
        include_str!("../../plugins/testdata/fill-filter.wat").replace("FILL", &fill.to_string())
    }

    /// A whole module: the prelude and `body`.
    pub fn module(body: &str) -> String {
        format!("(module {PRELUDE} {body})")
    }
}

/// A small file system of its own (a tmpfs of a given size, mounted on a fresh
/// directory and unmounted on drop), for a data directory that fills up. Mounting needs
/// root (CAP_SYS_ADMIN), which the test machines give; `None`, with the reason, where
/// it is refused.
pub struct SmallFilesystem {
    root: tempfile::TempDir,
}

impl SmallFilesystem {
    pub fn mount(bytes: u64) -> Result<SmallFilesystem, String> {
        let root = tempfile::tempdir().map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(root.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(SmallFilesystem { root })
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }

    /// Writes `name` until the file system refuses with "no space left"; returns the
    /// bytes written. Bounded by the file system's size.
    pub fn fill(&self, name: &str) -> u64 {
        let mut file = std::fs::File::create(self.path().join(name)).expect("filler file");
        let chunk = vec![0xa5u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {name}: {e}"),
            }
        }
        written
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        // Lazy: a broker killed a moment ago may still hold files open.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.root.path())
            .status();
    }
}

/// The SDK's [`quiver_sdk::Admin`] over a client's connection, so that a test
/// administers through the client it produces and fetches with.
/// An acks=all producer with small batches (4 KiB, 2 ms linger), so a few hundred
/// records make many batches: what the replication tests want to see move.
pub fn small_batch_producer(client: &Client) -> quiver_sdk::Producer {
    quiver_sdk::Producer::new(
        client.clone(),
        quiver_sdk::ProducerConfig::default()
            .acks(quiver_sdk::Acks::All)
            .linger(Duration::from_millis(2))
            .batch_bytes(4 * 1024),
    )
}

pub trait ClientAdmin {
    /// An admin sharing this client's connection.
    fn admin(&self) -> quiver_sdk::Admin;
}

impl ClientAdmin for Client {
    fn admin(&self) -> quiver_sdk::Admin {
        quiver_sdk::Admin::from_client(self.clone())
    }
}

/// A shared library that sets a process's wall clock off by the milliseconds in
/// `QUIVER_TEST_CLOCK_OFFSET_MS` when loaded with `LD_PRELOAD` (built from
/// `tests/shims/clock_offset.c` into `dir` with the C compiler Rust links with), for
/// brokers whose hosts' clocks disagree.
pub fn clock_offset_library(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("shims/clock_offset.c");
    let library = dir.join("libclockoffset.so");
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("run cc");
    assert!(
        built.status.success(),
        "cc could not build {}: {}",
        source.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    library
}
