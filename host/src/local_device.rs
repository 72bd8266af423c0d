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
    /// Runs the firmware built into this very `stdac` binary (`stdac device ARGS…`, the same code as
    /// `stdac-device`), e.g. with `--store DIR`.
    pub fn start_builtin(
        args: &[String],
        log: Option<&Path>,
        config: LinkConfig,
    ) -> anyhow::Result<(LocalDevice, DeviceClient)> {
        let exe = std::env::current_exe().context("cannot locate the running stdac binary")?;
        let args: Vec<String> = std::iter::once("device".to_string()).chain(args.iter().cloned()).collect();
        Self::start(&exe, &args, log, config)
    }

    /// Runs a firmware given as a command line, e.g. `target/aarch64-unknown-linux-gnu/release/stdac-device`
    /// or `qemu-aarch64 -L /usr/aarch64-linux-gnu stdac-device` (split on whitespace), with `args…`.
    pub fn start_command(
        command: &str,
        args: &[String],
        log: Option<&Path>,
        config: LinkConfig,
    ) -> anyhow::Result<(LocalDevice, DeviceClient)> {
        let mut words = command.split_whitespace().map(str::to_string);
        let program = words.next().context("the firmware command is empty")?;
        let args: Vec<String> = words.chain(args.iter().cloned()).collect();
        Self::start(Path::new(&program), &args, log, config)
    }

    /// Runs `program args… --port <tty>` on a fresh pseudo-terminal and returns a client on its other
    /// side, once the firmware has answered a hello. The firmware's log goes to `log` when given, else
    /// to our stderr.
    pub fn start(
        program: &Path,
        args: &[String],
        log: Option<&Path>,
        config: LinkConfig,
    ) -> anyhow::Result<(LocalDevice, DeviceClient)> {
        let (master, slave) = TTYPort::pair().context("cannot create a pseudo-terminal pair")?;
        let tty = slave.name().context("the pseudo-terminal has no name")?;
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
            ),
            None => Stdio::inherit(),
        };
        let child = Command::new(program)
            .args(args)
            .args(["--port", &tty])
            .stdin(Stdio::null())
            .stderr(stderr)
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
