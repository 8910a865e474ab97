//! Brokers a user might pick instead of shmq: Redis Streams (`XADD` / `XREAD BLOCK`, through
//! the `redis` crate's sync client) and NATS core pub/sub (its text protocol over TCP: the
//! Rust sync client, `nats`, is deprecated, and the protocol's four verbs are simple).
//!
//! Each pair starts its own server on 127.0.0.1 at a free port; the server dies with the
//! parent (`PR_SET_PDEATHSIG`) and is killed when the pair is dropped. Both sides use
//! `TCP_NODELAY`, as a latency-minded user would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::streams::{StreamMaxlen, StreamReadOptions, StreamReadReply};
use redis::{Commands, IntoConnectionInfo};

use crate::{Error, Mode, MSG, REPLY_TIMEOUT};

/// How long a server may take to accept connections.
const SERVER_START: Duration = Duration::from_secs(10);
/// Entries each Redis stream keeps (`MAXLEN ~`), so a long run does not grow the server.
const STREAM_MAXLEN: usize = 1024;
/// The file in the pair's directory holding the server's port, for the child.
const PORT_FILE: &str = "port";
/// A blocking child's `XREAD BLOCK` in milliseconds (it loops while idle).
const CHILD_BLOCK_MS: usize = 1000;

/// A broker server process of one pair.
struct Server {
    /// The server process, ours.
    child: Child,
    /// Where it listens on 127.0.0.1.
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` in `PATH` or the sbin directories (Debian puts nats-server in /usr/sbin).
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// An I/O error on the broker at `port`.
fn net(port: u16, op: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Io {
        path: format!("127.0.0.1:{port}").into(),
        op,
        source,
    }
}

/// A client library's error for `mode`.
fn client(mode: Mode) -> impl Fn(redis::RedisError) -> Error {
    move |e| Error::Transport {
        mode: mode.name(),
        what: e.to_string(),
    }
}

impl Server {
    /// Starts `mode`'s server on a free port and waits until it accepts connections; records
    /// the port in `dir` for the child.
    fn start(mode: Mode, dir: &Path) -> Result<Server, Error> {
        let bin = match mode {
            Mode::RedisStreams => "redis-server",
            _ => "nats-server",
        };
        let exe = find_binary(bin).ok_or_else(|| Error::Unavailable {
            mode: mode.name(),
            reason: format!("{bin} not found in PATH or /usr/sbin (Debian: apt-get install {bin})"),
        })?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(net(0, "find a free port"))?
            .port();
        let p = port.to_string();
        let mut cmd = Command::new(&exe);
        match mode {
            Mode::RedisStreams => cmd.args(["--bind", "127.0.0.1", "--port", &p, "--save", ""]),
            _ => cmd.args(["-a", "127.0.0.1", "-p", &p]),
        };
        if mode == Mode::RedisStreams {
            cmd.args(["--appendonly", "no", "--daemonize", "no", "--dir"])
                .arg(dir);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe; it allocates nothing and touches no locks.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            mode: mode.name(),
            source,
        })?;
        let mut server = Server { child, port };
        let port_file = dir.join(PORT_FILE);
        std::fs::write(&port_file, &p).map_err(|source| Error::Io {
            path: port_file,
            op: "write",
            source,
        })?;
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = server.child.try_wait().ok().flatten().is_some();
            if exited || start.elapsed() > SERVER_START {
                return Err(Error::Transport {
                    mode: mode.name(),
                    what: format!("{} did not start listening on port {port}", exe.display()),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }
}

/// The port the parent's server listens on, from the pair's directory.
fn read_port(dir: &Path, mode: Mode) -> Result<u16, Error> {
    let path = dir.join(PORT_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        op: "read",
        source,
    })?;
    text.trim().parse().map_err(|_| Error::Transport {
        mode: mode.name(),
        what: format!("{}: not a port: {text:?}", path.display()),
    })
}

/// One side's end of a Redis Streams pair: appends to one stream, reads the other.
struct RedisEnd {
    /// The connection.
    con: redis::Connection,
    /// The stream this side appends to.
    out: &'static str,
    /// The stream this side reads.
    inc: &'static str,
    /// The ID of the last entry read from `inc`.
    last: String,
}

impl RedisEnd {
    /// Connects to the server at `port` (`TCP_NODELAY`), with reads bounded by `timeout`.
    fn connect(
        port: u16,
        out: &'static str,
        inc: &'static str,
        timeout: Option<Duration>,
    ) -> Result<RedisEnd, Error> {
        let err = client(Mode::RedisStreams);
        let info = format!("redis://127.0.0.1:{port}/")
            .into_connection_info()
            .map_err(&err)?
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let con = redis::Client::open(info)
            .and_then(|c| c.get_connection())
            .map_err(&err)?;
        con.set_read_timeout(timeout).map_err(&err)?;
        Ok(RedisEnd {
            con,
            out,
            inc,
            last: "0-0".to_string(),
        })
    }

    /// `XADD out MAXLEN ~ 1024 * d <msg>`.
    fn send(&mut self, msg: &[u8]) -> Result<(), Error> {
        let _id: Option<String> = self
            .con
            .xadd_maxlen(
                self.out,
                StreamMaxlen::Approx(STREAM_MAXLEN),
                "*",
                &[("d", msg)],
            )
            .map_err(client(Mode::RedisStreams))?;
        Ok(())
    }

    /// `XREAD BLOCK block_ms COUNT 1 STREAMS inc <last>`: the next entry's payload into `buf`;
    /// `false` if none arrived in time.
    fn recv(&mut self, block_ms: usize, buf: &mut [u8; MSG]) -> Result<bool, Error> {
        let opts = StreamReadOptions::default().block(block_ms).count(1);
        let reply: Option<StreamReadReply> = self
            .con
            .xread_options(&[self.inc], &[self.last.as_str()], &opts)
            .map_err(client(Mode::RedisStreams))?;
        let Some(entry) = reply
            .and_then(|r| r.keys.into_iter().next())
            .and_then(|k| k.ids.into_iter().next())
        else {
            return Ok(false);
        };
        match entry.map.get("d") {
            Some(redis::Value::BulkString(b)) if b.len() == MSG => buf.copy_from_slice(b),
            other => {
                return Err(Error::Transport {
                    mode: Mode::RedisStreams.name(),
                    what: format!("entry {} has no {MSG}-byte field d: {other:?}", entry.id),
                })
            }
        }
        self.last = entry.id;
        Ok(true)
    }
}

/// One side's end of a NATS pair: publishes on one subject, subscribed to the other.
struct NatsEnd {
    /// Reads the server's protocol lines and message payloads.
    reader: BufReader<TcpStream>,
    /// Writes commands (a clone of the reader's socket).
    writer: TcpStream,
    /// The `PUB <subject> 64\r\n<payload>\r\n` frame, payload rewritten for each message.
    frame: Vec<u8>,
    /// Where the payload starts in `frame`.
    at: usize,
    /// The last protocol line read.
    line: String,
    /// The server's port, for errors.
    port: u16,
}

impl NatsEnd {
    /// Connects to the server at `port` (`TCP_NODELAY`, reads bounded by `timeout`),
    /// subscribes to `inc` and waits until the server has the subscription.
    fn connect(
        port: u16,
        out: &str,
        inc: &str,
        timeout: Option<Duration>,
    ) -> Result<NatsEnd, Error> {
        let sock = TcpStream::connect(("127.0.0.1", port)).map_err(net(port, "connect"))?;
        sock.set_nodelay(true)
            .map_err(net(port, "set TCP_NODELAY"))?;
        // The handshake is bounded even for a child, whose later reads wait forever.
        sock.set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(net(port, "set the read timeout"))?;
        let writer = sock.try_clone().map_err(net(port, "dup"))?;
        let mut frame = format!("PUB {out} {MSG}\r\n").into_bytes();
        let at = frame.len();
        frame.extend_from_slice(&[0u8; MSG]);
        frame.extend_from_slice(b"\r\n");
        let mut end = NatsEnd {
            reader: BufReader::new(sock),
            writer,
            frame,
            at,
            line: String::new(),
            port,
        };
        end.read_line()?;
        if !end.line.starts_with("INFO ") {
            return Err(end.unexpected());
        }
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":false}}\r\nSUB {inc} 1\r\nPING\r\n"
        );
        end.writer
            .write_all(hello.as_bytes())
            .map_err(net(port, "write"))?;
        loop {
            end.read_line()?;
            match end.line.trim_end() {
                "PONG" => break,
                "+OK" => continue,
                _ => return Err(end.unexpected()),
            }
        }
        end.reader
            .get_ref()
            .set_read_timeout(timeout)
            .map_err(net(port, "set the read timeout"))?;
        Ok(end)
    }

    /// Reads one protocol line into `self.line`.
    fn read_line(&mut self) -> Result<(), Error> {
        self.line.clear();
        match self.reader.read_line(&mut self.line) {
            Ok(0) => Err(Error::ChildGone {
                mode: Mode::Nats.name(),
            }),
            Ok(_) => Ok(()),
            Err(e) if is_timeout(&e) => Err(Error::Timeout {
                mode: Mode::Nats.name(),
            }),
            Err(e) => Err(net(self.port, "read")(e)),
        }
    }

    /// The last line as an error.
    fn unexpected(&self) -> Error {
        Error::Transport {
            mode: Mode::Nats.name(),
            what: format!("unexpected from the server: {:?}", self.line.trim_end()),
        }
    }

    /// `PUB out 64` with `msg`.
    fn send(&mut self, msg: &[u8; MSG]) -> Result<(), Error> {
        self.frame[self.at..self.at + MSG].copy_from_slice(msg);
        self.writer
            .write_all(&self.frame)
            .map_err(net(self.port, "write"))
    }

    /// The next message's payload into `buf` (answering the server's keep-alive `PING`s).
    fn recv(&mut self, buf: &mut [u8; MSG]) -> Result<(), Error> {
        loop {
            self.read_line()?;
            let line = self.line.trim_end();
            if line == "PING" {
                self.writer
                    .write_all(b"PONG\r\n")
                    .map_err(net(self.port, "write"))?;
                continue;
            }
            if line == "+OK" || line.starts_with("INFO ") {
                continue;
            }
            // MSG <subject> <sid> [reply-to] <#bytes>: the size comes from the network, so
            // only the one size we sent is accepted.
            let size = line
                .strip_prefix("MSG ")
                .and_then(|rest| rest.split_whitespace().last())
                .and_then(|n| n.parse::<usize>().ok());
            if size != Some(MSG) {
                return Err(self.unexpected());
            }
            let mut crlf = [0u8; 2];
            let read = self
                .reader
                .read_exact(buf)
                .and_then(|()| self.reader.read_exact(&mut crlf));
            return match read {
                Err(e) if is_timeout(&e) => Err(Error::Timeout {
                    mode: Mode::Nats.name(),
                }),
                Err(e) => Err(net(self.port, "read")(e)),
                Ok(()) if &crlf != b"\r\n" => Err(self.unexpected()),
                Ok(()) => Ok(()),
            };
        }
    }
}

/// Whether a socket read failed because its timeout ran out.
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A connection to the pair's broker.
enum End {
    /// Redis Streams.
    Redis(RedisEnd),
    /// NATS core.
    Nats(NatsEnd),
}

impl End {
    /// This side's connection for `mode`; `outgoing`/`incoming` name the stream or subject.
    fn connect(
        mode: Mode,
        port: u16,
        outgoing: &'static str,
        incoming: &'static str,
        timeout: Option<Duration>,
    ) -> Result<End, Error> {
        Ok(match mode {
            Mode::RedisStreams => End::Redis(RedisEnd::connect(port, outgoing, incoming, timeout)?),
            _ => End::Nats(NatsEnd::connect(port, outgoing, incoming, timeout)?),
        })
    }
}

/// The parent's side: its connection, then the server (fields drop in order).
pub(crate) struct Parent {
    /// The parent's connection.
    end: End,
    /// The pong payload's landing place.
    buf: [u8; MSG],
    /// The server, stopped when the pair goes away.
    _server: Server,
}

impl Parent {
    /// Starts the server for `mode` and connects; `Error::Unavailable` if the server's binary
    /// is not installed.
    pub(crate) fn new(mode: Mode, dir: &Path) -> Result<Parent, Error> {
        let server = Server::start(mode, dir)?;
        let end = End::connect(mode, server.port, "ping", "pong", Some(REPLY_TIMEOUT))?;
        Ok(Parent {
            end,
            buf: [0u8; MSG],
            _server: server,
        })
    }

    /// One ping and its pong.
    pub(crate) fn round_trip(&mut self, msg: &[u8; MSG]) -> Result<(), Error> {
        let mode = match &mut self.end {
            End::Redis(r) => {
                r.send(msg)?;
                let block = REPLY_TIMEOUT.as_millis() as usize;
                if !r.recv(block, &mut self.buf)? {
                    return Err(Error::Timeout {
                        mode: Mode::RedisStreams.name(),
                    });
                }
                Mode::RedisStreams
            }
            End::Nats(n) => {
                n.send(msg)?;
                n.recv(&mut self.buf)?;
                Mode::Nats
            }
        };
        if self.buf[0] != msg[0] {
            return Err(Error::Transport {
                mode: mode.name(),
                what: "the pong does not echo the ping".into(),
            });
        }
        Ok(())
    }
}

/// The child's side: echoes every ping as a pong until the parent goes away.
pub(crate) fn child(
    mode: Mode,
    dir: &Path,
    ready: impl FnOnce() -> Result<(), Error>,
) -> Result<(), Error> {
    let port = read_port(dir, mode)?;
    // An idle child waits as long as it takes: the parent may be measuring other modes.
    let mut end = End::connect(mode, port, "pong", "ping", None)?;
    ready()?;
    let mut buf = [0u8; MSG];
    loop {
        match &mut end {
            End::Redis(r) => {
                if r.recv(CHILD_BLOCK_MS, &mut buf)? {
                    r.send(&buf)?;
                }
            }
            End::Nats(n) => {
                n.recv(&mut buf)?;
                n.send(&buf)?;
            }
        }
    }
}
