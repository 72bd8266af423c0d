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
