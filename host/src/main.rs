//! `stdac`: the host command-line tool. One function per subcommand; the work lives in the library.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use stdac::data::{self, Source, Split};
use stdac::kmeans::{self, KMeansConfig};
use stdac::local_device::LocalDevice;
use stdac::metrics::{self, Contingency, Scores};
use stdac::pca::Pca;
use stdac::run::RunDir;
use stdac::st_dac::augment::Augmentation;
use stdac::st_dac::eval as st_dac_eval;
use stdac::st_dac::loss::{Schedule, Selection, Thresholds};
use stdac::st_dac::train::{self as st_dac_train, Protocol, TrainConfig};
use stdac::st_dac::{StDacConfig, StnPosition};
use stdac::transport::{DeviceClient, LinkConfig};
use stdac::{figures, selftest};
use stdac_device::cli::DeviceArgs;

#[derive(Parser)]
#[command(name = "stdac", version, about = "Unsupervised image clustering, from training to the edge board")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score a clustering against true labels: prints one JSON line of n, acc, nmi, ari, homogeneity,
    /// completeness and v_measure.
    Metrics {
        /// True labels, one integer per line.
        #[arg(long)]
        truth: PathBuf,
        /// Predicted clusters, one integer per line, in the same order.
        #[arg(long)]
        pred: PathBuf,
        /// Also draw the confusion matrix (after matching clusters to classes) into this PNG.
        #[arg(long)]
        confusion: Option<PathBuf>,
    },
    /// Cluster a dataset with k-means on raw features or on principal components; the last line of
    /// output is the metrics JSON.
    Baseline(BaselineArgs),
    /// Train a clustering model; checkpoints every epoch into --out and resumes from there when
    /// interrupted.
    Train(Box<TrainArgs>),
    /// Score a trained run's newest checkpoint on its evaluation images and draw its figures (confusion
    /// matrix, training curves, samples per cluster, STN view) into the run folder; the last line of
    /// output is the metrics JSON.
    Eval {
        /// Run folder (the --out of `stdac train`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Take the first N images of each split (default: the run's own --limit). Held out, that is
        /// the first N test images; transductive, the first N of train and of test.
        #[arg(long)]
        limit: Option<usize>,
        /// Folder holding mnist/ and fashion-mnist/ (default: ../shared/datasets).
        #[arg(long, env = "STDAC_DATA")]
        data: Option<PathBuf>,
    },
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
struct DatasetArgs {
    /// mnist, fashion-mnist, iris, wine, synthetic-control, or a folder of images.
    #[arg(long)]
    dataset: Source,
    /// Which part: test (default for MNIST and Fashion-MNIST), train, or all (default for the others).
    #[arg(long, value_enum)]
    split: Option<Split>,
    /// Use only the first N samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Folder holding mnist/ and fashion-mnist/ (default: ../shared/datasets).
    #[arg(long, env = "STDAC_DATA")]
    data: Option<PathBuf>,
}

#[derive(Args)]
struct BaselineArgs {
    #[command(flatten)]
    dataset: DatasetArgs,
    #[arg(long, value_enum, default_value = "kmeans")]
    method: BaselineMethod,
    /// Clusters (default: the number of classes).
    #[arg(long)]
    k: Option<usize>,
    /// Principal components kept by pca-kmeans.
    #[arg(long, default_value_t = 50)]
    components: usize,
    /// k-means seedings; the one with the lowest inertia is kept.
    #[arg(long, default_value_t = 10)]
    restarts: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the cluster of every sample, one per line, in dataset order.
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// Draw the confusion matrix into this PNG.
    #[arg(long)]
    confusion: Option<PathBuf>,
}

#[derive(Args)]
struct TrainArgs {
    /// Model family.
    #[arg(long, value_enum, default_value = "st-dac")]
    model: ModelKind,
    /// Spatial transformers, comma-separated: input, block2, block3 (none by default).
    #[arg(long, value_enum, value_delimiter = ',')]
    stn: Vec<StnPosition>,
    /// mnist or fashion-mnist.
    #[arg(long)]
    dataset: String,
    /// held-out: train on train, score on test. transductive: train and score on train + test, as the
    /// authors did.
    #[arg(long, value_enum, default_value = "held-out")]
    protocol: Protocol,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// DAC* pair selection: code (the authors' code), text (the dissertation's text) or learned (DAC's λ).
    #[arg(long, value_enum, default_value = "code")]
    selection: Selection,
    /// Starting upper threshold (default 0.99).
    #[arg(long)]
    upper: Option<f64>,
    /// Starting lower threshold (default: code 0.8 for MNIST, 0.9 for Fashion-MNIST; text the reverse).
    #[arg(long)]
    lower: Option<f64>,
    /// Epochs over which the thresholds move.
    #[arg(long, default_value_t = 10)]
    schedule_epochs: usize,
    /// Step of the learned λ per iteration.
    #[arg(long, default_value_t = 0.009)]
    eta: f64,
    /// Weight of the outputs' cross-entropy toward their clean predictions (default: 10 with code, else 0).
    #[arg(long)]
    self_weight: Option<f64>,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Train without augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Leave out the tanh on the localization nets' last layer.
    #[arg(long)]
    no_stn_tanh: bool,
    /// Width of the wide dense layer.
    #[arg(long, default_value_t = 3096)]
    dense_width: usize,
    #[arg(long, default_value_t = 10)]
    clusters: usize,
    /// Run folder.
    #[arg(long)]
    out: PathBuf,
    /// Folder holding mnist/ and fashion-mnist/ (default: ../shared/datasets).
    #[arg(long, env = "STDAC_DATA")]
    data: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelKind {
    /// Deep adaptive clustering with spatial transformers.
    StDac,
}

#[derive(Clone, Copy, ValueEnum)]
enum BaselineMethod {
    /// k-means on the raw features (pixels).
    Kmeans,
    /// k-means on the leading principal components.
    PcaKmeans,
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
        Command::Metrics { truth, pred, confusion } => metrics_cmd(&truth, &pred, confusion.as_deref()),
        Command::Baseline(args) => baseline(&args),
        Command::Train(args) => train(&args),
        Command::Eval { checkpoint, limit, data } => eval(&checkpoint, limit, data.as_deref()),
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

fn metrics_cmd(
    truth: &std::path::Path,
    pred: &std::path::Path,
    confusion: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (t, p) = (metrics::read_label_file(truth)?, metrics::read_label_file(pred)?);
    ensure!(
        t.len() == p.len(),
        "{} holds {} labels but {} holds {}: one prediction per sample, in the same order",
        truth.display(),
        t.len(),
        pred.display(),
        p.len()
    );
    let contingency = Contingency::new(&t, &p);
    if let Some(png) = confusion {
        figures::confusion_matrix(&contingency, &[], "confusion matrix", png)?;
    }
    println!("{}", Scores::from_contingency(&contingency).to_json());
    Ok(())
}

fn baseline(args: &BaselineArgs) -> anyhow::Result<()> {
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    }
    let d = &args.dataset;
    let dataset = data::load(&d.dataset, d.split, d.limit, d.data.as_deref())?;
    let labels = dataset
        .labels
        .as_ref()
        .with_context(|| format!("{} has no labels to score against", dataset.name))?;
    let k = args.k.unwrap_or(dataset.class_names.len());
    ensure!(k >= 1 && k <= dataset.len(), "--k {k} needs between 1 and {} (the samples)", dataset.len());
    let started = Instant::now();
    let (features, dim, method) = match args.method {
        BaselineMethod::Kmeans => (dataset.features.clone(), dataset.dim, "kmeans".to_string()),
        BaselineMethod::PcaKmeans => {
            let m = args.components.min(dataset.dim);
            let pca = Pca::fit(&dataset.features, dataset.dim, m);
            (pca.transform(&dataset.features), m, format!("pca({m})-kmeans"))
        }
    };
    let config = KMeansConfig { restarts: args.restarts, seed: args.seed, ..KMeansConfig::new(k) };
    let fit = kmeans::fit(&features, dim, &config);
    let pred: Vec<i64> = fit.labels.iter().map(|&l| l as i64).collect();
    let contingency = Contingency::new(labels, &pred);
    println!(
        "{method} on {} ({} × {}), k = {k}, {} restarts: inertia {:.6e}, {} iterations, {:.2} s",
        dataset.name,
        dataset.len(),
        dataset.dim,
        args.restarts,
        fit.inertia,
        fit.iterations,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.predictions {
        let text: String = pred.iter().map(|p| format!("{p}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(png) = &args.confusion {
        let title = format!("{method} on {}", dataset.name);
        figures::confusion_matrix(&contingency, &dataset.class_names, &title, png)?;
    }
    println!("{}", Scores::from_contingency(&contingency).to_json());
    Ok(())
}

fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let ModelKind::StDac = args.model;
    let fashion = args.dataset == "fashion-mnist";
    let (default_lower, augmentation) = match (fashion, args.selection) {
        (false, Selection::Text) => (0.9, Augmentation::MNIST),
        (false, _) => (0.8, Augmentation::MNIST),
        (true, Selection::Text) => (0.8, Augmentation::FASHION_MNIST),
        (true, _) => (0.9, Augmentation::FASHION_MNIST),
    };
    let schedule = Schedule {
        selection: args.selection,
        start: Thresholds { upper: args.upper.unwrap_or(0.99), lower: args.lower.unwrap_or(default_lower) },
        epochs: args.schedule_epochs,
        eta: args.eta,
    };
    ensure!(schedule.start.lower <= schedule.start.upper, "--lower must not exceed --upper");
    ensure!(args.batch >= 2, "--batch must be at least 2: DAC* learns from pairs");
    let self_weight = args.self_weight.unwrap_or(if args.selection == Selection::Code { 10.0 } else { 0.0 });
    let model = StDacConfig::new()
        .with_stn(args.stn.clone())
        .with_stn_tanh(!args.no_stn_tanh)
        .with_dense_width(args.dense_width)
        .with_clusters(args.clusters);
    let config = TrainConfig::new(
        model,
        args.dataset.clone(),
        args.protocol,
        args.epochs,
        args.batch,
        schedule,
        self_weight,
        if args.no_augment { Augmentation::NONE } else { augmentation },
    )
    .with_limit(args.limit)
    .with_lr(args.lr)
    .with_seed(args.seed);
    let run = RunDir::open(&args.out, &serde_json::to_string_pretty(&config)?)?;
    st_dac_train::train(&config, &run, args.data.as_deref())?;
    println!(
        "trained: {} (evaluate with `stdac eval --checkpoint {}`)",
        run.path().display(),
        run.path().display()
    );
    Ok(())
}

fn eval(
    checkpoint: &std::path::Path,
    limit: Option<usize>,
    data: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let run = RunDir::existing(checkpoint)?;
    let evaluation = st_dac_eval::evaluate(&run, data, limit)?;
    println!(
        "{} after {} epochs on {}: ACC {:.4}, NMI {:.4}, ARI {:.4}; outputs unit-length within {:.1e}",
        checkpoint.display(),
        evaluation.epochs,
        evaluation.dataset,
        evaluation.scores.acc,
        evaluation.scores.nmi,
        evaluation.scores.ari,
        evaluation.max_norm_error
    );
    for path in &evaluation.written {
        println!("wrote {}", path.display());
    }
    println!("{}", evaluation.scores.to_json());
    Ok(())
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
