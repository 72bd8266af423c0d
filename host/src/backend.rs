//! The tensor backend, chosen at compile time in this one place: burn's Flex CPU backend by default
//! (about ten times faster than burn-ndarray on this model, measured on a 2-core machine), CUDA through
//! burn-cuda with `--features cuda`. Everything else is generic over it.

#[cfg(not(feature = "cuda"))]
pub type Backend = burn::backend::Flex;
#[cfg(feature = "cuda")]
pub type Backend = burn::backend::Cuda;

/// The backend with gradients, for training.
pub type TrainBackend = burn::backend::Autodiff<Backend>;
pub type Device = burn::tensor::Device<Backend>;

/// What the backend is, for logs and run records.
pub const NAME: &str = if cfg!(feature = "cuda") { "cuda (burn-cuda)" } else { "cpu (burn-flex)" };

/// The device to compute on. With CUDA, a machine without a usable driver is a clear error here rather
/// than a panic deep inside the first kernel launch.
pub fn device() -> anyhow::Result<Device> {
    #[cfg(not(feature = "cuda"))]
    keep_freed_memory();
    let device = Device::default();
    #[cfg(feature = "cuda")]
    {
        let probe = std::panic::catch_unwind(|| {
            burn::tensor::Tensor::<Backend, 1>::ones([1], &device).into_data();
        });
        if probe.is_err() {
            anyhow::bail!(
                "this stdac was built with CUDA but no usable CUDA driver was found (libcuda/libnvrtc); \
                 use a build without --features cuda to train on the CPU"
            );
        }
    }
    Ok(device)
}

/// Makes the C allocator keep the memory a training step frees for the next step.
///
/// A step allocates and frees the same tensors every time, tens of MB each at batch 256. By default
/// glibc serves each by a fresh `mmap` and returns it with `munmap`, so the kernel zero-fills every
/// page again on first touch: a fifth of an edge-network step (page faults and unmapping, in a perf
/// profile, models/RESULTS.md). Raising the mmap threshold and the trim threshold keeps freed blocks in
/// the heap, where the next step finds them; the peak memory stays what the step needs.
#[cfg(not(feature = "cuda"))]
fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes glibc's allocation thresholds; it is called once, before the
        // trainer allocates its tensors, and a refused value leaves the default in place.
        unsafe {
            // glibc refuses thresholds above its own limit (32 MiB on some versions): try the larger first.
            if libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30) == 0 {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            }
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    });
}
