//! What a benchmark figure was measured on: the CPU (its model and SIMD flags, since hosts of one kind
//! differ between sessions) and the process's peak memory.

/// The CPU's model name and the SIMD extensions it lists in /proc/cpuinfo that matter to the kernels
/// measured here (f32 FMA widths, int8 dot products).
pub fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let simd: Vec<&str> = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8"]
        .into_iter()
        .filter(|flag| flags.split(' ').any(|f| f == *flag))
        .collect();
    format!(
        "{}, {} threads ({})",
        field("model name").unwrap_or_else(|| "unknown CPU".into()),
        std::thread::available_parallelism().map_or(1, |t| t.get()),
        if simd.is_empty() { "no AVX2".to_string() } else { simd.join(" ") }
    )
}

/// The process's peak resident set size so far, in KiB (Linux only).
pub fn vm_hwm_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
