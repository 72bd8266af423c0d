//! `stdac`: the host command-line tool. One function per subcommand; the work lives in the library.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use stdac::autoencoder::loss::{Noise, Sparsity};
use stdac::autoencoder::search::{self, Query};
use stdac::autoencoder::{
    eval as ae_eval, train as ae_train, AeTrainConfig, Architecture, AutoencoderConfig, Kind,
};
use stdac::data::{self, Protocol, Source, Split};
use stdac::kmeans::{self, KMeansConfig};
use stdac::local_device::LocalDevice;
use stdac::metrics::{self, Contingency, Scores};
use stdac::pca::Pca;
use stdac::run::RunDir;
use stdac::st_dac::augment::Augmentation;
use stdac::st_dac::eval as st_dac_eval;
use stdac::st_dac::loss::{Schedule, Selection, Thresholds};
use stdac::st_dac::train::{self as st_dac_train, TrainConfig};
use stdac::st_dac::{Arch, StDacConfig, StnPosition};
use stdac::transport::{DeviceClient, LinkConfig};
use stdac::{export, figures, selftest};
use stdac_device::cli::DeviceArgs;

mod board_cli;

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
    /// Train a clustering model (ST-DAC, or an autoencoder family model: ae, sae, dae, vae, dcn);
    /// checkpoints every epoch into --out and resumes from there when interrupted.
    Train(Box<TrainArgs>),
    /// Score a trained run's newest checkpoint on its evaluation samples and draw its figures (confusion
    /// matrix, training curves, samples per cluster; ST-DAC: STN view; autoencoders: latent scatter,
    /// reconstructions, denoising) into the run folder; the last line of output is the metrics JSON.
    Eval {
        /// Run folder (the --out of `stdac train`).
        #[arg(long, required_unless_present = "bundle", conflicts_with = "bundle")]
        checkpoint: Option<PathBuf>,
        /// Instead of a run, a bundle (NAME.stdac) evaluated through the board's inference engine on
        /// --dataset, one frame at a time; `--bundle` alone takes the shipped default model.
        #[arg(long, requires = "dataset", num_args = 0..=1, default_missing_value = stdac::DEFAULT_BUNDLE)]
        bundle: Option<PathBuf>,
        /// With --bundle: the images to assign (mnist, fashion-mnist or a folder of pictures).
        #[arg(long)]
        dataset: Option<Source>,
        /// With --bundle: which split (default test).
        #[arg(long, value_enum)]
        split: Option<Split>,
        /// Take the first N images of each split (default: the run's own --limit). Held out, that is
        /// the first N test images; transductive, the first N of train and of test.
        #[arg(long)]
        limit: Option<usize>,
        /// With --bundle: write the cluster of every image, one per line, in dataset order.
        #[arg(long)]
        predictions: Option<PathBuf>,
        /// Folder holding mnist/ and fashion-mnist/ (default: ../shared/datasets).
        #[arg(long, env = "STDAC_DATA")]
        data: Option<PathBuf>,
    },
    /// Export a trained run (ST-DAC or an image autoencoder) for a board: `model.onnx`, `manifest.json`
    /// and the bundle `NAME.stdac` into --out (NAME: the folder's name), checked with tract against the
    /// trained model on the run's scored images first.
    Export {
        /// Run folder (the --out of `stdac train`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output folder, e.g. models/mnist-st-dac.
        #[arg(long)]
        out: PathBuf,
        /// Weights and activations: float32, or int8 (QLinearConv / QLinearMatMul, per-channel weights,
        /// calibrated activations; spatial transformers and the last layers stay float).
        #[arg(long, value_enum, default_value = "none")]
        quantize: export::Quantization,
        /// Training images run to calibrate the int8 activations.
        #[arg(long, default_value_t = 1000)]
        calib: usize,
        /// Write the bundle even when the int8 graph fails its checks (agreement ≥ 99.5 %, ACC drop ≤ 0.5
        /// points); the manifest records the figures either way.
        #[arg(long)]
        force: bool,
        /// Folder holding mnist/ and fashion-mnist/ (default: ../shared/datasets).
        #[arg(long, env = "STDAC_DATA")]
        data: Option<PathBuf>,
    },
    /// Find the training samples nearest a query in a trained autoencoder's latent space (exact search);
    /// prints them, then one JSON line, and draws them into a PNG grid.
    Search {
        /// Run folder of an autoencoder family model (the --out of `stdac train`).
        #[arg(long)]
        checkpoint: PathBuf,
        /// A picture (any size, grey or colour) to look for.
        #[arg(long, required_unless_present = "query_index", conflicts_with = "query_index")]
        query: Option<PathBuf>,
        /// Instead of a picture, the sample at this index of the run's scored samples (its test split
        /// when held out).
        #[arg(long)]
        query_index: Option<usize>,
        /// Neighbours to return.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Where to draw the results (default: search.png in the run folder).
        #[arg(long)]
        grid: Option<PathBuf>,
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
    /// Write a model bundle onto a board: checked first, sent in chunks with resends, resumed where a cut
    /// flash stopped, then the board must report the bundle's SHA-256. `--rollback` brings back the
    /// previous model instead.
    Flash(board_cli::FlashArgs),
    /// Send frames to a board (a folder of pictures or a dataset) and show its assignments live:
    /// per-cluster counts, rate, latency. Without frames, listen to the board's own camera.
    Stream(board_cli::StreamArgs),
    /// Hardware-in-the-loop test: flash a bundle, stream real frames, check every assignment against the
    /// host's engine, score them, and write a pass/fail report (JSON and markdown). Without --port, the
    /// board firmware runs locally behind a pseudo-terminal.
    Hil(board_cli::HilArgs),
    /// The main job, on any machine: the board firmware on a pseudo-terminal, the default model flashed
    /// onto it, real MNIST test frames streamed, each assignment printed and checked, then the scores
    /// and the report and figures written.
    Demo(board_cli::DemoArgs),
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
    /// ST-DAC: the feature network: paper (the dissertation's, ~40 M weights) or edge (sized for a
    /// board: ~220,000 weights, pooled to a 3 × 3 grid of 64 maps).
    #[arg(long, value_enum, default_value = "paper")]
    arch: Arch,
    /// ST-DAC: spatial transformers, comma-separated: input, block2, block3 (none by default).
    #[arg(long, value_enum, value_delimiter = ',')]
    stn: Vec<StnPosition>,
    /// ST-DAC: mnist or fashion-mnist. Autoencoders: also iris, wine, synthetic-control or a folder of
    /// images.
    #[arg(long)]
    dataset: String,
    /// held-out: train on train, score on test. transductive: train and score on train + test, as the
    /// DAC authors did. Datasets without a split train and score on all of it either way.
    #[arg(long, value_enum, default_value = "held-out")]
    protocol: Protocol,
    /// Epochs (DCN: of pre-training). Default: ST-DAC 10; autoencoders 20 on images, 100 on tables.
    #[arg(long)]
    epochs: Option<usize>,
    /// Default: ST-DAC 32; autoencoders 256 on images, 32 on tables.
    #[arg(long)]
    batch: Option<usize>,
    /// ST-DAC: DAC* pair selection: code (the authors' code), text (the dissertation's text) or learned
    /// (DAC's λ).
    #[arg(long, value_enum, default_value = "code")]
    selection: Selection,
    /// ST-DAC: starting upper threshold (default 0.99).
    #[arg(long)]
    upper: Option<f64>,
    /// ST-DAC: starting lower threshold (default: code 0.8 for MNIST, 0.9 for Fashion-MNIST; text the
    /// reverse).
    #[arg(long)]
    lower: Option<f64>,
    /// ST-DAC: epochs over which the thresholds move.
    #[arg(long, default_value_t = 10)]
    schedule_epochs: usize,
    /// ST-DAC: step of the learned λ per iteration.
    #[arg(long, default_value_t = 0.009)]
    eta: f64,
    /// ST-DAC: weight of the outputs' cross-entropy toward their clean predictions (default: 10 with
    /// code, else 0).
    #[arg(long)]
    self_weight: Option<f64>,
    /// Adam's learning rate. Default: ST-DAC 1e-4, autoencoders 1e-3.
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N samples (of each split).
    #[arg(long)]
    limit: Option<usize>,
    /// ST-DAC: train without augmentation.
    #[arg(long)]
    no_augment: bool,
    /// ST-DAC: leave out the tanh on the localization nets' last layer.
    #[arg(long)]
    no_stn_tanh: bool,
    /// ST-DAC: width of the dense layer after the features (default: paper 3096, edge 128).
    #[arg(long)]
    dense_width: Option<usize>,
    /// Clusters (default: ST-DAC 10; autoencoders the dataset's classes).
    #[arg(long)]
    clusters: Option<usize>,
    /// Autoencoders: dense or conv (28 × 28 images only).
    #[arg(long, value_enum, default_value = "dense")]
    architecture: Architecture,
    /// Autoencoders: widths of the encoder's hidden layers, comma-separated (the decoder mirrors them).
    /// Default: 500,500,2000 for dense on images (as DEC and DCN), 64,32 on tables, none for conv.
    /// `none` for no hidden layer (a linear code).
    #[arg(long, value_parser = parse_widths)]
    hidden: Option<Widths>,
    /// Autoencoders: dimension of the latent code (default: 10 on images, the clusters on tables).
    #[arg(long)]
    latent: Option<usize>,
    /// Sparse autoencoder: l1 (activity) or kl (sparsity target).
    #[arg(long, value_enum, default_value = "l1")]
    sparsity: SparsityKind,
    /// Sparse autoencoder: weight of the penalty (default: l1 1e-3, kl 0.1).
    #[arg(long)]
    sparsity_weight: Option<f64>,
    /// Sparse autoencoder with kl: the share of samples each code unit should be active for.
    #[arg(long, default_value_t = 0.05)]
    sparsity_target: f64,
    /// Denoising autoencoder: gaussian noise or masking.
    #[arg(long, value_enum, default_value = "gaussian")]
    noise: NoiseKind,
    /// Denoising autoencoder: the noise's standard deviation, or the share of features masked.
    #[arg(long, default_value_t = 0.2)]
    noise_level: f64,
    /// Variational autoencoder: weight β of the KL term.
    #[arg(long, default_value_t = 1.0)]
    beta: f64,
    /// DCN: weight λ of the k-means term.
    #[arg(long, default_value_t = 1.0)]
    dcn_lambda: f64,
    /// DCN: epochs of joint training after pre-training (default: 10 on images, 50 on tables).
    #[arg(long)]
    dcn_epochs: Option<usize>,
    /// Run folder.
    #[arg(long)]
    out: PathBuf,
    /// Folder holding mnist/ and fashion-mnist/ (default: ../shared/datasets).
    #[arg(long, env = "STDAC_DATA")]
    data: Option<PathBuf>,
}

/// Layer widths from the command line.
#[derive(Clone, Debug)]
struct Widths(Vec<usize>);

/// `none`, or widths separated by commas, e.g. `500,500,2000`.
fn parse_widths(text: &str) -> Result<Widths, String> {
    if text == "none" {
        return Ok(Widths(Vec::new()));
    }
    text.split(',')
        .map(|w| match w.trim().parse::<usize>() {
            Ok(width) if width > 0 => Ok(width),
            _ => Err(format!(
                "{w:?} is not a layer width: give positive integers separated by commas, or none"
            )),
        })
        .collect::<Result<_, _>>()
        .map(Widths)
}

#[derive(Clone, Copy, ValueEnum)]
enum SparsityKind {
    L1,
    Kl,
}

#[derive(Clone, Copy, ValueEnum)]
enum NoiseKind {
    Gaussian,
    Masking,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelKind {
    /// Deep adaptive clustering with spatial transformers.
    StDac,
    /// Autoencoder; clusters by k-means on its codes.
    Ae,
    /// Sparse autoencoder (--sparsity l1|kl).
    Sae,
    /// Denoising autoencoder (--noise gaussian|masking).
    Dae,
    /// Variational autoencoder (--beta).
    Vae,
    /// Deep clustering network: autoencoder + k-means, trained jointly (--dcn-lambda, --dcn-epochs).
    Dcn,
}

#[derive(Clone, Copy, ValueEnum)]
enum BaselineMethod {
    /// k-means on the raw features (pixels).
    Kmeans,
    /// k-means on the leading principal components.
    PcaKmeans,
}

#[derive(Args)]
pub(crate) struct PortArgs {
    /// Serial port of the board, e.g. /dev/ttyUSB0.
    #[arg(long, env = "STDAC_PORT")]
    pub(crate) port: String,
    #[command(flatten)]
    pub(crate) link: LinkArgs,
}

#[derive(Args)]
pub(crate) struct LinkArgs {
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
    pub(crate) fn config(&self) -> LinkConfig {
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
        Command::Eval { checkpoint: Some(checkpoint), limit, data, .. } => {
            eval(&checkpoint, limit, data.as_deref())
        }
        Command::Eval {
            bundle: Some(bundle),
            dataset: Some(dataset),
            split,
            limit,
            predictions,
            data,
            ..
        } => eval_bundle(&bundle, &dataset, split, limit, predictions.as_deref(), data.as_deref()),
        Command::Eval { .. } => {
            Err(anyhow::anyhow!("give --checkpoint RUN, or --bundle FILE --dataset NAME"))
        }
        Command::Export { checkpoint, out, quantize, calib, force, data } => {
            let options = export::ExportOptions { quantization: quantize, calibration_images: calib, force };
            export_cmd(&checkpoint, &out, &options, data.as_deref())
        }
        Command::Search { checkpoint, query, query_index, k, grid, data } => {
            search_cmd(&checkpoint, query.as_deref(), query_index, k, grid, data.as_deref())
        }
        Command::Selftest { port, pings, link } => selftest_cmd(port, pings, &link),
        Command::Info { port } => info(&port),
        Command::Ping { port, count } => ping(&port, count),
        Command::Device(args) => stdac_device::cli::run(&args),
        Command::Flash(args) => board_cli::flash_cmd(&args),
        Command::Stream(args) => board_cli::stream_cmd(&args),
        Command::Hil(args) => board_cli::hil_cmd(&args),
        Command::Demo(args) => board_cli::demo_cmd(&args),
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
    let kind = match args.model {
        ModelKind::StDac => return train_st_dac(args),
        ModelKind::Ae => Kind::Ae,
        ModelKind::Sae => Kind::Sae,
        ModelKind::Dae => Kind::Dae,
        ModelKind::Vae => Kind::Vae,
        ModelKind::Dcn => Kind::Dcn,
    };
    train_autoencoder(args, kind)
}

fn train_st_dac(args: &TrainArgs) -> anyhow::Result<()> {
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
    let batch = args.batch.unwrap_or(32);
    ensure!(batch >= 2, "--batch must be at least 2: DAC* learns from pairs");
    let self_weight = args.self_weight.unwrap_or(if args.selection == Selection::Code { 10.0 } else { 0.0 });
    let model = StDacConfig::new()
        .with_arch(args.arch)
        .with_stn(args.stn.clone())
        .with_stn_tanh(!args.no_stn_tanh)
        .with_dense_width(args.dense_width.unwrap_or(args.arch.default_dense_width()))
        .with_clusters(args.clusters.unwrap_or(10));
    let config = TrainConfig::new(
        model,
        args.dataset.clone(),
        args.protocol,
        args.epochs.unwrap_or(10),
        batch,
        schedule,
        self_weight,
        if args.no_augment { Augmentation::NONE } else { augmentation },
    )
    .with_limit(args.limit)
    .with_lr(args.lr.unwrap_or(1e-4))
    .with_seed(args.seed);
    let run = RunDir::open(&args.out, &serde_json::to_string_pretty(&config)?)?;
    st_dac_train::train(&config, &run, args.data.as_deref())?;
    trained(&run);
    Ok(())
}

fn trained(run: &RunDir) {
    let path = run.path().display();
    println!("trained: {path} (evaluate with `stdac eval --checkpoint {path}`)");
}

fn train_autoencoder(args: &TrainArgs, kind: Kind) -> anyhow::Result<()> {
    let source: Source = args.dataset.parse().map_err(anyhow::Error::msg)?;
    // One sample tells the shape of the data and its classes.
    let probe = data::load(&source, None, Some(1), args.data.as_deref())?;
    let images = probe.image_size.is_some();
    ensure!(
        args.architecture == Architecture::Dense || probe.image_size == Some((28, 28)),
        "--architecture conv takes 28 × 28 images; {} is not made of them",
        probe.name
    );
    let clusters = args.clusters.unwrap_or(probe.class_names.len());
    ensure!(clusters >= 1, "{} has no classes: say how many clusters with --clusters", probe.name);
    let hidden = args.hidden.clone().map(|w| w.0).unwrap_or_else(|| match (args.architecture, images) {
        (Architecture::Conv, _) => Vec::new(),
        (Architecture::Dense, true) => vec![500, 500, 2000],
        (Architecture::Dense, false) => vec![64, 32],
    });
    let latent = args.latent.unwrap_or(if images { 10 } else { clusters });
    ensure!(latent >= 1, "--latent must be at least 1");
    let batch = args.batch.unwrap_or(if images { 256 } else { 32 });
    ensure!(batch >= 1, "--batch must be at least 1");
    let model = AutoencoderConfig::new(probe.dim, args.architecture, hidden, latent)
        .with_variational(kind == Kind::Vae)
        .with_sigmoid_output(images);
    let sparsity = (kind == Kind::Sae).then(|| match args.sparsity {
        SparsityKind::L1 => Sparsity::L1 { weight: args.sparsity_weight.unwrap_or(1e-3) },
        SparsityKind::Kl => {
            Sparsity::Kl { target: args.sparsity_target, weight: args.sparsity_weight.unwrap_or(0.1) }
        }
    });
    let noise = (kind == Kind::Dae).then_some(match args.noise {
        NoiseKind::Gaussian => Noise::Gaussian { std: args.noise_level },
        NoiseKind::Masking => Noise::Masking { fraction: args.noise_level },
    });
    match noise {
        Some(Noise::Masking { fraction }) => {
            ensure!(
                (0.0..1.0).contains(&fraction),
                "--noise-level of masking is a share of features, in [0, 1)"
            )
        }
        Some(Noise::Gaussian { std }) => {
            ensure!(
                std.is_finite() && std >= 0.0,
                "--noise-level of gaussian noise is a standard deviation, ≥ 0"
            )
        }
        None => {}
    }
    let config = AeTrainConfig::new(
        ae_train::FAMILY.to_string(),
        kind,
        model,
        args.dataset.clone(),
        args.protocol,
        args.epochs.unwrap_or(if images { 20 } else { 100 }),
        batch,
        clusters,
    )
    .with_limit(args.limit)
    .with_sparsity(sparsity)
    .with_noise(noise)
    .with_dcn_epochs(match kind {
        Kind::Dcn => args.dcn_epochs.unwrap_or(if images { 10 } else { 50 }),
        _ => 0,
    })
    .with_lr(args.lr.unwrap_or(1e-3))
    .with_seed(args.seed)
    .with_beta(args.beta)
    .with_dcn_lambda(args.dcn_lambda);
    let run = RunDir::open(&args.out, &serde_json::to_string_pretty(&config)?)?;
    ae_train::train(&config, &run, args.data.as_deref())?;
    trained(&run);
    Ok(())
}

fn eval(
    checkpoint: &std::path::Path,
    limit: Option<usize>,
    data: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let run = RunDir::existing(checkpoint)?;
    if run.family()? == ae_train::FAMILY {
        return eval_autoencoder(&run, limit, data);
    }
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

fn eval_autoencoder(
    run: &RunDir,
    limit: Option<usize>,
    data: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let evaluation = ae_eval::evaluate(run, data, limit)?;
    let scores = match &evaluation.scores {
        Some(s) => format!("ACC {:.4}, NMI {:.4}, ARI {:.4}", s.acc, s.nmi, s.ari),
        None => "no labels to score against".to_string(),
    };
    println!(
        "{} after {} epochs on {}: {scores}; reconstruction MSE {:.4e} per feature",
        run.path().display(),
        evaluation.epochs,
        evaluation.dataset,
        evaluation.reconstruction_mse
    );
    for path in &evaluation.written {
        println!("wrote {}", path.display());
    }
    let mut json = match &evaluation.scores {
        Some(s) => s.to_json(),
        None => serde_json::json!({ "n": null }),
    };
    json["reconstruction_mse"] = evaluation.reconstruction_mse.into();
    println!("{json}");
    Ok(())
}

fn eval_bundle(
    path: &std::path::Path,
    source: &Source,
    split: Option<Split>,
    limit: Option<usize>,
    predictions: Option<&std::path::Path>,
    data: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let path = &stdac::locate_bundle(path);
    let engine = stdac_device::engine::Engine::from_file(path)?;
    let images = data::load(source, split, limit, data)?;
    let started = Instant::now();
    let mut clusters = Vec::with_capacity(images.len());
    let mut novel = 0usize;
    for i in 0..images.len() {
        let a = engine.assign(images.row(i)).with_context(|| format!("{} #{i}", images.name))?;
        novel += usize::from(a.novel);
        clusters.push(a.cluster as i64);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} ({}) on {}: {} images in {:.2} s ({:.0} frames/s, one at a time), {novel} novel",
        path.display(),
        engine.manifest().name,
        images.name,
        images.len(),
        seconds,
        images.len() as f64 / seconds
    );
    if let Some(file) = predictions {
        let text: String = clusters.iter().map(|c| format!("{c}\n")).collect();
        std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    let labels =
        images.labels.as_ref().with_context(|| format!("{} has no labels to score against", images.name))?;
    println!("{}", Scores::of(labels, &clusters).to_json());
    Ok(())
}

fn export_cmd(
    checkpoint: &std::path::Path,
    out: &std::path::Path,
    options: &export::ExportOptions,
    data: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let run = RunDir::existing(checkpoint)?;
    let e = export::export(&run, out, data, options)?;
    let describe = |what: &str, c: &export::Check| {
        let acc = c.scores.as_ref().map_or(String::new(), |s| format!(", ACC {:.4}", s.acc));
        println!(
            "{what} graph in tract {}: embeddings within {:.2e} of burn's on {}, {:.2} % assigned alike{acc}",
            export::TRACT_VERSION,
            c.max_abs_diff,
            e.checked_on,
            100.0 * c.agreement
        );
    };
    describe("float", &e.float);
    if let Some(int8) = &e.int8 {
        describe("int8", int8);
    }
    for path in &e.written {
        println!("wrote {}", path.display());
    }
    let mut json = serde_json::json!({
        "bundle": e.bundle.display().to_string(),
        "bytes": e.bundle_bytes,
        "sha256": e.bundle_sha256,
        "quantization": e.quantization.name(),
        "max_abs_diff": e.float.max_abs_diff,
        "cluster_agreement": e.float.agreement,
        "novelty_threshold": e.novelty_threshold,
    });
    if let Some(scores) = &e.reference {
        json["trained_model_scores"] = scores.to_json();
    }
    if let Some(scores) = &e.float.scores {
        json["scores"] = scores.to_json();
    }
    if let Some(int8) = &e.int8 {
        json["int8_cluster_agreement"] = int8.agreement.into();
        json["int8_max_abs_diff"] = int8.max_abs_diff.into();
        if let Some(scores) = &int8.scores {
            json["int8_scores"] = scores.to_json();
        }
    }
    println!("{json}");
    Ok(())
}

fn search_cmd(
    checkpoint: &std::path::Path,
    picture: Option<&std::path::Path>,
    index: Option<usize>,
    k: usize,
    grid: Option<PathBuf>,
    data: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let run = RunDir::existing(checkpoint)?;
    ensure!(
        run.family()? == ae_train::FAMILY,
        "{} is not an autoencoder run: search needs a latent space (train one with --model ae|sae|dae|vae|dcn)",
        checkpoint.display()
    );
    let query = match (picture, index) {
        (Some(path), _) => Query::Picture(path),
        (None, Some(i)) => Query::Scored(i),
        (None, None) => anyhow::bail!("give --query PICTURE or --query-index N"),
    };
    let results = search::search(&run, query, k, data)?;
    for (rank, hit) in results.hits.iter().enumerate() {
        let label = hit.label.as_deref().unwrap_or("-");
        println!(
            "{:>3}. {} #{} at distance {:.4} ({label})",
            rank + 1,
            results.searched,
            hit.index,
            hit.distance
        );
    }
    if results.image_size.is_some() {
        let path = grid.unwrap_or_else(|| run.path().join("search.png"));
        results.draw(&path)?;
        println!("wrote {}", path.display());
    }
    println!("{}", results.to_json());
    Ok(())
}

fn selftest_cmd(port: Option<String>, pings: u32, link: &LinkArgs) -> anyhow::Result<()> {
    let (_local, mut client) = match &port {
        Some(path) => (None, DeviceClient::open(path, link.config())?),
        None => {
            let (local, client) = LocalDevice::start_builtin(&[], None, link.config())?;
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
    let mut json = json;
    // The shipped default model, through the board's engine, on real test images.
    json["default_model"] = match default_model_check(1000) {
        Ok(check) => check,
        Err(e) => {
            println!("default model not checked: {e:#}");
            serde_json::Value::Null
        }
    };
    println!("{json}");
    Ok(())
}

/// Loads the default bundle into the board's engine and assigns the first `n` MNIST test images.
fn default_model_check(n: usize) -> anyhow::Result<serde_json::Value> {
    let path = stdac::locate_bundle(std::path::Path::new(stdac::DEFAULT_BUNDLE));
    let engine = stdac_device::engine::Engine::from_file(&path)?;
    let images = data::load(&Source::Mnist, Some(Split::Test), Some(n), None)?;
    let started = Instant::now();
    let mut clusters = Vec::with_capacity(images.len());
    for i in 0..images.len() {
        clusters.push(engine.assign(images.row(i))?.cluster as i64);
    }
    let fps = images.len() as f64 / started.elapsed().as_secs_f64();
    let labels = images.labels.as_ref().context("MNIST has labels")?;
    let scores = Scores::of(labels, &clusters);
    println!(
        "default model OK: {} (quantization {}) assigned {} at {fps:.0} frames/s one at a time: ACC {:.4}, NMI {:.4}",
        path.display(),
        engine.manifest().quantization,
        images.name,
        scores.acc,
        scores.nmi
    );
    Ok(serde_json::json!({
        "bundle": path.display().to_string(),
        "graph_sha256": engine.manifest().graph_sha256,
        "images": images.name,
        "frames_per_s": fps,
        "scores": scores.to_json(),
    }))
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
