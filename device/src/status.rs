//! The board's status LED, driven through embedded-hal's [`OutputPin`] so that any board's GPIO driver
//! fits: lit while the device works (a frame being assigned, a flash chunk being written), dark
//! otherwise, so someone looking at the board sees it busy or idle. Failures are counted.
//!
//! On Linux boards the LED is usually a sysfs LED ([`SysfsLed`], `--led PATH`); without one,
//! [`NoLed`] stands in.

use std::path::{Path, PathBuf};

use embedded_hal::digital::{ErrorKind, ErrorType, OutputPin};

/// An LED showing the device's activity.
pub struct StatusLed<P> {
    pin: P,
    /// Failures reported (an assignment or flash that failed).
    errors: u32,
    /// Times the pin itself could not be set; the LED never stops the firmware.
    pin_failures: u32,
}

impl<P: OutputPin> StatusLed<P> {
    /// The LED on `pin`, turned off.
    pub fn new(pin: P) -> Self {
        let mut led = StatusLed { pin, errors: 0, pin_failures: 0 };
        led.set(false);
        led
    }

    /// Work starts: the LED lights.
    pub fn busy(&mut self) {
        self.set(true);
    }

    /// Work is done: the LED goes dark.
    pub fn idle(&mut self) {
        self.set(false);
    }

    /// A failure: counted, and the LED left dark so a stuck-lit LED never hides one.
    pub fn failed(&mut self) {
        self.errors = self.errors.saturating_add(1);
        self.set(false);
    }

    /// Failures reported so far.
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Times the pin could not be set.
    pub fn pin_failures(&self) -> u32 {
        self.pin_failures
    }

    /// Gives the pin back.
    pub fn into_pin(self) -> P {
        self.pin
    }

    fn set(&mut self, lit: bool) {
        let result = if lit { self.pin.set_high() } else { self.pin.set_low() };
        if let Err(error) = result {
            // Said once: an LED that cannot be set would otherwise fill the log at the frame rate.
            if self.pin_failures == 0 {
                eprintln!("stdac-device: the status LED cannot be set ({:?}); carrying on without it", error);
            }
            self.pin_failures = self.pin_failures.saturating_add(1);
        }
    }
}

/// The LED the server drives, whatever its pin: lets the server hold any [`StatusLed`].
pub trait Indicator: Send {
    fn busy(&mut self);
    fn idle(&mut self);
    fn failed(&mut self);
}

impl<P: OutputPin + Send> Indicator for StatusLed<P> {
    fn busy(&mut self) {
        StatusLed::busy(self)
    }

    fn idle(&mut self) {
        StatusLed::idle(self)
    }

    fn failed(&mut self) {
        StatusLed::failed(self)
    }
}

/// A pin that goes nowhere, for boards without a status LED.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLed;

impl ErrorType for NoLed {
    type Error = core::convert::Infallible;
}

impl OutputPin for NoLed {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A Linux LED class device: writing its `brightness` file lights it (the LED's `max_brightness`) or
/// turns it off (0).
#[derive(Debug)]
pub struct SysfsLed {
    brightness: PathBuf,
    /// What "on" writes: the LED's `max_brightness` when it says, else 1.
    on: String,
}

/// A write to the LED's `brightness` file failed; names the file.
#[derive(Debug, thiserror::Error)]
#[error("LED {path}: {source}")]
pub struct SysfsLedError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl embedded_hal::digital::Error for SysfsLedError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

impl SysfsLed {
    /// The LED at `path`: its directory (`/sys/class/leds/NAME`) or its `brightness` file. The file
    /// must be writable now, so a wrong path is found at start-up, not at the first frame.
    pub fn open(path: &Path) -> Result<SysfsLed, SysfsLedError> {
        let brightness = if path.is_dir() { path.join("brightness") } else { path.to_path_buf() };
        std::fs::OpenOptions::new()
            .write(true)
            .open(&brightness)
            .map_err(|source| SysfsLedError { path: brightness.clone(), source })?;
        let max = brightness.parent().map(|dir| dir.join("max_brightness"));
        let on = max
            .and_then(|max| std::fs::read_to_string(max).ok())
            .and_then(|text| text.trim().parse::<u32>().ok())
            .filter(|&max| max > 0)
            .map_or_else(|| "1".to_string(), |max| max.to_string());
        Ok(SysfsLed { brightness, on })
    }

    /// The `brightness` file it writes.
    pub fn path(&self) -> &Path {
        &self.brightness
    }

    fn write(&self, value: &str) -> Result<(), SysfsLedError> {
        std::fs::write(&self.brightness, format!("{value}\n"))
            .map_err(|source| SysfsLedError { path: self.brightness.clone(), source })
    }
}

impl ErrorType for SysfsLed {
    type Error = SysfsLedError;
}

impl OutputPin for SysfsLed {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.write("0")
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        let on = self.on.clone();
        self.write(&on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sysfs_led_writes_its_brightness_file_and_uses_max_brightness() {
        let dir = tempfile::tempdir().unwrap();
        let brightness = dir.path().join("brightness");
        std::fs::write(&brightness, "0\n").unwrap();

        // Without max_brightness, on is 1.
        let mut led = StatusLed::new(SysfsLed::open(&brightness).unwrap());
        assert_eq!(std::fs::read_to_string(&brightness).unwrap(), "0\n");
        led.busy();
        assert_eq!(std::fs::read_to_string(&brightness).unwrap(), "1\n");
        led.idle();
        assert_eq!(std::fs::read_to_string(&brightness).unwrap(), "0\n");

        // The LED's directory, with a max_brightness of 255.
        std::fs::write(dir.path().join("max_brightness"), "255\n").unwrap();
        let mut led = StatusLed::new(SysfsLed::open(dir.path()).unwrap());
        led.busy();
        assert_eq!(std::fs::read_to_string(&brightness).unwrap(), "255\n");
        led.failed();
        assert_eq!(std::fs::read_to_string(&brightness).unwrap(), "0\n");
        assert_eq!((led.errors(), led.pin_failures()), (1, 0));
    }

    #[test]
    fn a_missing_led_is_an_error_naming_it_and_a_failing_pin_never_stops_the_firmware() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("leds/status/brightness");
        let error = SysfsLed::open(&missing).unwrap_err().to_string();
        assert!(error.contains("leds/status/brightness"), "{error}");

        // The file vanishes after opening (the LED unbound): each set fails, is counted, and is harmless.
        let brightness = dir.path().join("brightness");
        std::fs::write(&brightness, "0").unwrap();
        let pin = SysfsLed::open(&brightness).unwrap();
        std::fs::remove_file(&brightness).unwrap();
        std::fs::create_dir(&brightness).unwrap(); // a directory where the file was: writes fail
        let mut led = StatusLed::new(pin);
        led.busy();
        led.idle();
        assert_eq!(led.pin_failures(), 3, "new, busy and idle each tried");
        let mut none = StatusLed::new(NoLed);
        none.busy();
        assert_eq!(none.pin_failures(), 0);
    }
}
