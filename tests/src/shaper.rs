//! Delay, jitter (and so reordering), duplication and loss of the datagrams between
//! brokers, done in user space because this kernel has no netem: each broker's
//! namespace routes what it sends to the other brokers into a TUN device, a thread of
//! the test reads each packet, holds it for its link's delay, drops or copies it as the
//! link's [`Shape`] says, and writes it back; the namespace then forwards it to its
//! destination as usual. Packets to and from the test's own address (the clients)
//! never enter the TUN, so clients see a clean network.
//!
//! Routing, per broker namespace: table 100 holds one route per other broker into the
//! TUN, consulted by every packet (rule `pref 100`); packets coming back out of the TUN
//! skip it (rule `iif TUN lookup main`, `pref 90`) and leave by the broker's veth. The
//! TUN accepts packets from the namespace's own address (`accept_local`) and does not
//! filter by reverse path; forwarding is on. All of it lives and dies with the
//! namespace.

use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What happens to each datagram on one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Held this long before it goes on.
    pub delay: Duration,
    /// Plus up to this much more, drawn per datagram: datagrams overtake each other.
    pub jitter: Duration,
    /// Sent twice, each copy with its own delay, this many times in a thousand.
    pub duplicate_per_mille: u32,
    /// Dropped this many times in a thousand.
    pub drop_per_mille: u32,
}

/// Counts of what a shaper did, for a test to show that its faults happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShapeCounts {
    /// Datagrams read from the TUN.
    pub seen: u64,
    /// Datagrams that went on later than one sent after them.
    pub reordered: u64,
    /// Extra copies sent.
    pub duplicated: u64,
    /// Datagrams dropped.
    pub dropped: u64,
}

/// The links' shapes, keyed by (source, destination) address, and what was done.
#[derive(Default)]
struct Rules {
    shapes: BTreeMap<(Ipv4Addr, Ipv4Addr), Shape>,
    counts: ShapeCounts,
}

/// The shaper of one broker namespace: its TUN and the thread serving it. Stops when
/// dropped (or when the namespace, and with it the TUN, is removed).
pub struct Shaper {
    rules: Arc<Mutex<Rules>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// `TUNSETIFF`, `IFF_TUN` and `IFF_NO_PI` from linux/if_tun.h.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
/// The largest datagram the TUN hands over (its MTU is the veth's 1500).
const PACKET_BYTES_MAX: usize = 65_536;
/// How long the thread waits for a packet before it checks the clock and `stop`.
const POLL_MS: i32 = 2;

impl Shaper {
    /// Makes TUN `tun` in namespace `netns` (whose address is `own`), routes what the
    /// namespace sends to `peers` through it, and serves it.
    pub fn start(
        netns: &str,
        tun: &str,
        own: Ipv4Addr,
        peers: &[Ipv4Addr],
    ) -> Result<Shaper, String> {
        let file = open_tun_in(netns, tun)?;
        let ip = |args: &[&str]| -> Result<(), String> {
            let mut all = vec!["-n", netns];
            all.extend_from_slice(args);
            let out = std::process::Command::new("ip")
                .args(&all)
                .output()
                .map_err(|e| format!("cannot run `ip`: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "`ip {}` failed: {}",
                    all.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        };
        let sysctl = |key: &str| -> Result<(), String> {
            let path = format!("/proc/sys/net/ipv4/{key}");
            // /proc/sys shows the reading thread's namespace: write from one inside.
            in_netns(netns, || {
                std::fs::write(&path, "1\n").map_err(|e| format!("{path}: {e}"))
            })?
        };
        ip(&["link", "set", tun, "up"])?;
        sysctl("ip_forward")?;
        sysctl(&format!("conf/{tun}/accept_local"))?;
        let zero = |key: &str| -> Result<(), String> {
            let path = format!("/proc/sys/net/ipv4/{key}");
            in_netns(netns, || {
                std::fs::write(&path, "0\n").map_err(|e| format!("{path}: {e}"))
            })?
        };
        zero("conf/all/rp_filter")?;
        zero(&format!("conf/{tun}/rp_filter"))?;
        let own_text = own.to_string();
        for peer in peers {
            let to = format!("{peer}/32");
            ip(&[
                "route", "add", &to, "dev", tun, "table", "100", "src", &own_text,
            ])?;
        }
        ip(&["rule", "add", "iif", tun, "lookup", "main", "pref", "90"])?;
        ip(&["rule", "add", "lookup", "100", "pref", "100"])?;

        let rules = Arc::new(Mutex::new(Rules::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (rules, stop) = (Arc::clone(&rules), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(format!("shaper-{tun}"))
                .spawn(move || serve(file, &rules, &stop))
                .map_err(|e| format!("cannot start the shaper thread: {e}"))?
        };
        Ok(Shaper {
            rules,
            stop,
            thread: Some(thread),
        })
    }

    /// Shapes datagrams from `from` to `to` as `shape` says (a default shape passes
    /// them on at once).
    pub fn set(&self, from: Ipv4Addr, to: Ipv4Addr, shape: Shape) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shapes
            .insert((from, to), shape);
    }

    /// Passes every datagram on at once again.
    pub fn clear(&self) {
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shapes
            .clear();
    }

    /// What the shaper did so far.
    pub fn counts(&self) -> ShapeCounts {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).counts
    }
}

impl Drop for Shaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `f` on a thread that joined network namespace `netns`.
fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> Result<T, String> {
    let path = std::path::Path::new("/run/netns").join(netns);
    let handle = File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns(2) on this scoped thread alone, with a descriptor that
                // stays open for the call; the thread ends right after `f`.
                if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!(
                        "cannot enter {netns}: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                Ok(f())
            })
            .join()
            .map_err(|_| "the namespace thread panicked".to_owned())?
    })
}

/// Opens `/dev/net/tun` as TUN device `name` (no packet information header) inside
/// namespace `netns`: a TUN device belongs to the namespace it was made in.
fn open_tun_in(netns: &str, name: &str) -> Result<File, String> {
    let name = name.to_owned();
    in_netns(netns, move || -> Result<File, String> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| format!("cannot open /dev/net/tun: {e}"))?;
        // struct ifreq: 16 bytes of name, then the flags (a short) in the union.
        let mut ifreq = [0u8; 40];
        if name.len() >= 16 {
            return Err(format!("TUN name {name} is longer than 15 bytes"));
        }
        ifreq[..name.len()].copy_from_slice(name.as_bytes());
        ifreq[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifreq` is large
        // enough to hold; the descriptor is open.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, ifreq.as_mut_ptr()) } != 0 {
            return Err(format!(
                "TUNSETIFF {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        // Non-blocking, so the serving thread can also release held packets on time.
        // SAFETY: fcntl(2) on an open descriptor.
        unsafe {
            let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        Ok(file)
    })?
}

/// A packet waiting for its release time; the heap yields the earliest first.
struct Held {
    at: Instant,
    serial: u64,
    packet: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.serial) == (other.at, other.serial)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.serial).cmp(&(self.at, self.serial))
    }
}

/// Reads packets, holds and copies or drops them per their link's shape, writes them
/// back when due; ends when `stop` is set or the TUN goes away.
fn serve(tun: File, rules: &Mutex<Rules>, stop: &AtomicBool) {
    // The same descriptor for writing: reads and writes of a TUN are whole packets.
    // SAFETY: `dup` of an open descriptor gives a new one this File owns.
    let mut writer = unsafe { File::from_raw_fd(libc::dup(tun.as_raw_fd())) };
    let mut reader = tun;
    let mut held: BinaryHeap<Held> = BinaryHeap::new();
    let mut buf = vec![0u8; PACKET_BYTES_MAX];
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    let mut serial = 0u64;
    let mut last_sent = 0u64;
    while !stop.load(Ordering::Acquire) {
        let mut poll = libc::pollfd {
            fd: reader.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut poll, 1, POLL_MS) };
        loop {
            let len = match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(len) => len,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let packet = &buf[..len];
            if len < 20 || packet[0] >> 4 != 4 {
                continue;
            }
            let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
            let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
            let mut rules = rules.lock().unwrap_or_else(|p| p.into_inner());
            rules.counts.seen += 1;
            let shape = rules.shapes.get(&(src, dst)).copied().unwrap_or_default();
            if random.below(1000) < u64::from(shape.drop_per_mille) {
                rules.counts.dropped += 1;
                continue;
            }
            let copies = if random.below(1000) < u64::from(shape.duplicate_per_mille) {
                rules.counts.duplicated += 1;
                2
            } else {
                1
            };
            drop(rules);
            for _ in 0..copies {
                let jitter_us = shape.jitter.as_micros() as u64;
                let extra = if jitter_us == 0 {
                    0
                } else {
                    random.below(jitter_us + 1)
                };
                serial += 1;
                held.push(Held {
                    at: Instant::now() + shape.delay + Duration::from_micros(extra),
                    serial,
                    packet: packet.to_vec(),
                });
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|h| h.at <= now) {
            let Some(due) = held.pop() else { break };
            if due.serial < last_sent {
                rules
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .counts
                    .reordered += 1;
            }
            last_sent = last_sent.max(due.serial);
            if writer.write(&due.packet).is_err() && stop.load(Ordering::Acquire) {
                return;
            }
        }
    }
}

/// A small generator: the shaper needs spread, not quality.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}
