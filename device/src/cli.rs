//! The `stdac-device` command line. The firmware binary and the host's `stdac device` (which runs the
//! same firmware locally, e.g. on a pseudo-terminal for tests and the demo) both call [`run`].

use anyhow::Context;
use clap::Args;

use crate::store::ModelStore;
use crate::{serial, Link, Server};

/// Serve the stdac protocol on a serial port.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Serial port to serve, e.g. /dev/ttyS0, /dev/ttyGS0 or a pseudo-terminal.
    #[arg(long, env = "STDAC_DEVICE_PORT")]
    pub port: String,
    /// Line speed in baud (ignored by pseudo-terminals and USB gadgets).
    #[arg(long, default_value_t = 115_200, env = "STDAC_DEVICE_BAUD")]
    pub baud: u32,
    /// Model store directory: flashed models are kept there and the active one serves frames. Without
    /// it the device cannot be flashed and has no model.
    #[arg(long, env = "STDAC_DEVICE_STORE")]
    pub store: Option<std::path::PathBuf>,
}

/// Serves until the line fails; the error names the port.
pub fn run(args: &DeviceArgs) -> anyhow::Result<()> {
    let stream = serial::open(&args.port, args.baud)?;
    let mut link = Link::new(stream);
    let mut server = match &args.store {
        Some(dir) => {
            let store = ModelStore::open(dir)
                .with_context(|| format!("cannot open the model store {}", dir.display()))?;
            for repair in store.repairs() {
                eprintln!("stdac-device: store: {repair}");
            }
            match store.active() {
                Some(model) => eprintln!(
                    "stdac-device: active model {} ({} bytes) from {}",
                    model.name,
                    model.size,
                    model.path.display()
                ),
                None => eprintln!("stdac-device: no model in {} yet: flash one", dir.display()),
            }
            Server::with_store(store)
        }
        None => Server::new(),
    };
    eprintln!(
        "stdac-device {}: serving protocol v{} on {} at {} baud",
        crate::server::FIRMWARE_VERSION,
        stdac_protocol::PROTOCOL_VERSION,
        args.port,
        args.baud
    );
    server.run(&mut link).with_context(|| format!("serial port {} failed", args.port))
}
