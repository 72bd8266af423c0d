//! A device firmware running on this machine behind a pseudo-terminal: what the self-test (and later the
//! demo and HIL suite) talk to when no board is plugged in. It is a separate process serving a real tty,
//! exactly as on a board; only the wire is a pseudo-terminal instead of a UART.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use serialport::{SerialPort, TTYPort};

use crate::transport::{DeviceClient, LinkConfig};

pub struct LocalDevice {
    child: Child,
    /// The pseudo-terminal the firmware serves.
    pub tty: String,
}

impl LocalDevice {
    /// Runs the firmware built into this very `stdac` binary (`stdac device`, the same code as
    /// `stdac-device`).
    pub fn start_builtin(config: LinkConfig) -> anyhow::Result<(LocalDevice, DeviceClient)> {
        let exe = std::env::current_exe().context("cannot locate the running stdac binary")?;
        Self::start(&exe, &["device".to_string()], config)
    }

    /// Runs `program args… --port <tty>` on a fresh pseudo-terminal and returns a client on its other
    /// side, once the firmware has answered a hello.
    pub fn start(
        program: &Path,
        args: &[String],
        config: LinkConfig,
    ) -> anyhow::Result<(LocalDevice, DeviceClient)> {
        let (master, slave) = TTYPort::pair().context("cannot create a pseudo-terminal pair")?;
        let tty = slave.name().context("the pseudo-terminal has no name")?;
        let child = Command::new(program)
            .args(args)
            .args(["--port", &tty])
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start the device firmware {}", program.display()))?;
        let mut device = LocalDevice { child, tty: tty.clone() };
        let name = format!("{tty} (local device, pid {})", device.child.id());
        let mut client = DeviceClient::new(Box::new(master), &name, config);
        // Our copy of the slave side keeps the bytes we write queued until the firmware opens the tty.
        let ready = client.hello();
        drop(slave); // from now on, the firmware exiting closes the line and the client says so
        if let Err(error) = ready {
            let status = device.child.try_wait().ok().flatten();
            let what = status.map_or("did not answer".to_string(), |s| format!("exited ({s})"));
            return Err(anyhow::Error::new(error).context(format!("the local device firmware {what}")));
        }
        Ok((device, client))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the firmware at once (as a power cut would) and reaps it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(|_| ())
    }
}

impl Drop for LocalDevice {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
