//! `stdac`: the host command-line tool. One function per subcommand; the work lives in the library.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use stdac::local_device::LocalDevice;
use stdac::selftest;
use stdac::transport::{DeviceClient, LinkConfig};
use stdac_device::cli::DeviceArgs;

#[derive(Parser)]
#[command(name = "stdac", version, about = "Unsupervised image clustering, from training to the edge board")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a serial link end to end: hello, round trips, recovery from line noise, device counters.
    /// Without --port, against the device firmware run locally on a pseudo-terminal.
    Selftest {
        /// Serial port of a board to test; omit to test against a local firmware.
        #[arg(long, env = "STDAC_PORT")]
        port: Option<String>,
        /// Round trips to time.
        #[arg(long, default_value_t = 200)]
        pings: u32,
        #[command(flatten)]
        link: LinkArgs,
    },
    /// Show a board's hello (protocol, firmware, active model, capabilities) as one JSON line.
    Info {
        #[command(flatten)]
        port: PortArgs,
    },
    /// Time round trips to a board.
    Ping {
        #[command(flatten)]
        port: PortArgs,
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Run the device firmware on this machine, serving a serial port (the same code as stdac-device).
    Device(DeviceArgs),
}

#[derive(Args)]
struct PortArgs {
    /// Serial port of the board, e.g. /dev/ttyUSB0.
    #[arg(long, env = "STDAC_PORT")]
    port: String,
    #[command(flatten)]
    link: LinkArgs,
}

#[derive(Args)]
struct LinkArgs {
    /// Line speed in baud.
    #[arg(long, default_value_t = 115_200, env = "STDAC_BAUD")]
    baud: u32,
    /// How long to wait for each reply before resending, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Resends of a request before giving up.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Set DTR on open. By default it is left alone: toggling it resets some boards.
    #[arg(long, value_enum)]
    dtr: Option<Level>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Level {
    High,
    Low,
}

impl LinkArgs {
    fn config(&self) -> LinkConfig {
        LinkConfig {
            baud: self.baud,
            timeout: Duration::from_millis(self.timeout_ms),
            retries: self.retries,
            dtr: self.dtr.map(|level| matches!(level, Level::High)),
        }
    }
}

fn main() {
    let result = match Cli::parse().command {
        Command::Selftest { port, pings, link } => selftest_cmd(port, pings, &link),
        Command::Info { port } => info(&port),
        Command::Ping { port, count } => ping(&port, count),
        Command::Device(args) => stdac_device::cli::run(&args),
    };
    if let Err(error) = result {
        eprintln!("stdac: error: {error:#}");
        std::process::exit(1);
    }
}

fn selftest_cmd(port: Option<String>, pings: u32, link: &LinkArgs) -> anyhow::Result<()> {
    let (_local, mut client) = match &port {
        Some(path) => (None, DeviceClient::open(path, link.config())?),
        None => {
            let (local, client) = LocalDevice::start_builtin(link.config())?;
            println!("started the device firmware locally on {} (pid {})", local.tty, local.pid());
            (Some(local), client)
        }
    };
    let name = client.port_name().to_string();
    let report = selftest::run(&mut client, pings).with_context(|| format!("self-test of {name} failed"))?;
    let json = report.to_json(&name);
    println!(
        "link OK: protocol v{}, firmware {}, {} round trips (median {} µs, max {} µs), \
         {} damaged frames dropped and recovered from, {} resends",
        report.hello.protocol,
        report.hello.firmware_version,
        json["pings"],
        json["rtt_us_median"],
        json["rtt_us_max"],
        report.device_rx_errors,
        report.resends,
    );
    println!("{json}");
    Ok(())
}

fn info(port: &PortArgs) -> anyhow::Result<()> {
    let mut client = DeviceClient::open(&port.port, port.link.config())?;
    let hello = client.hello()?;
    let mut json = selftest::hello_json(&hello);
    json["port"] = port.port.clone().into();
    println!("{json}");
    Ok(())
}

fn ping(port: &PortArgs, count: u32) -> anyhow::Result<()> {
    let mut client = DeviceClient::open(&port.port, port.link.config())?;
    client.hello()?;
    for i in 0..count {
        let rtt = client.ping()?;
        println!("ping {i}: {} µs", rtt.as_micros());
    }
    Ok(())
}
