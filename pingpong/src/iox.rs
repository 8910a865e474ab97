//! iceoryx2 publish-subscribe: a `ping` and a `pong` service of `[u8; 64]` samples, each side
//! publishing on one and spinning on `receive()` of the other.

use std::path::Path;

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use crate::shared::{Bell, Idle, Patience, IDLE_POLLS};
use crate::{Error, Mode, MSG};

/// The payload type of both services.
type Payload = [u8; MSG];

/// One side's ports, and the node and services that must outlive them (fields drop in order).
struct Ports {
    /// Publishes on the outgoing service.
    tx: Publisher<ipc::Service, Payload, ()>,
    /// Receives from the incoming service.
    rx: Subscriber<ipc::Service, Payload, ()>,
    /// The two services.
    _services: [PortFactory<ipc::Service, Payload, ()>; 2],
    /// The node that owns them.
    _node: Node<ipc::Service>,
}

/// An iceoryx2 error as this crate's error.
fn err(e: impl std::fmt::Display) -> Error {
    Error::Transport {
        mode: Mode::Iceoryx2.name(),
        what: e.to_string(),
    }
}

impl Ports {
    /// Opens (or creates) the pair's services, named after `dir`'s unique last component;
    /// `outgoing` is the one this side publishes on.
    fn open(dir: &Path, outgoing: &str, incoming: &str) -> Result<Ports, Error> {
        // Only errors: the default-config notice would interleave with the report.
        set_log_level(LogLevel::Error);
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let node = NodeBuilder::new().create::<ipc::Service>().map_err(err)?;
        let service = |name: &str| -> Result<PortFactory<ipc::Service, Payload, ()>, Error> {
            let name: ServiceName = format!("shmq-bench/{id}/{name}")
                .as_str()
                .try_into()
                .map_err(err)?;
            node.service_builder(&name)
                .publish_subscribe::<Payload>()
                .open_or_create()
                .map_err(err)
        };
        let out = service(outgoing)?;
        let inc = service(incoming)?;
        let tx = out.publisher_builder().create().map_err(err)?;
        let rx = inc.subscriber_builder().create().map_err(err)?;
        Ok(Ports {
            tx,
            rx,
            _services: [out, inc],
            _node: node,
        })
    }
}

/// The parent's side: publishes pings, spins for pongs.
pub(crate) struct Parent(Ports);

impl Parent {
    /// Sets up the parent's ports before the child starts.
    pub(crate) fn new(dir: &Path) -> Result<Parent, Error> {
        Ports::open(dir, "ping", "pong").map(Parent)
    }

    /// One ping and its pong.
    #[inline]
    pub(crate) fn round_trip(&mut self, msg: &Payload) -> Result<(), Error> {
        self.0.tx.send_copy(*msg).map_err(err)?;
        let mut patience = Patience::new();
        loop {
            if let Some(sample) = self.0.rx.receive().map_err(err)? {
                if sample.payload()[0] != msg[0] {
                    return Err(err("the pong does not echo the ping"));
                }
                return Ok(());
            }
            patience.spin(Mode::Iceoryx2)?;
        }
    }
}

/// The child's side: echoes every ping as a pong.
pub(crate) fn child(dir: &Path, ready: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
    let ports = Ports::open(dir, "pong", "ping")?;
    let bell = Bell::open(dir)?;
    ready()?;
    let mut idle = Idle::new(IDLE_POLLS, &bell);
    loop {
        match ports.rx.receive().map_err(err)? {
            Some(sample) => {
                idle.busy();
                let msg = *sample.payload();
                drop(sample);
                ports.tx.send_copy(msg).map_err(err)?;
            }
            None => idle.empty(),
        }
    }
}
