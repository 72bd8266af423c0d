//! The capture thread: pulls frames from a [`FrameSource`] while a stream is on and hands them to the
//! server through a bounded queue that drops the oldest frame when the server falls behind. The source
//! may block (a camera waits for its sensor, a folder for its frame rate) without holding up the serial
//! line, and a slow model costs frames, never memory.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::queue::DropOldestQueue;
use crate::source::{Frame, FrameSource};

/// A frame as the capture thread numbered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedFrame {
    /// The source's sequential frame number, from 0, never reused while the firmware runs (gaps are
    /// frames dropped): the `frame_id` of its assignment.
    pub number: u32,
    pub frame: Frame,
}

/// Something besides a frame the server should tell the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureEvent {
    /// The source failed to give a frame (a camera read, a picture that does not decode); capture goes on.
    Failed(String),
    /// The source has run out (a folder played once); capture rests until the next stream starts.
    Ended,
}

/// Frame counts since the capture started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureCounts {
    /// Frames the source gave while a stream was on.
    pub captured: u32,
    /// Frames pushed out of the queue by newer ones, or still queued when a stream stopped.
    pub dropped: u32,
}

/// Events kept for the server at most; more are dropped (a source failing every frame would
/// otherwise grow them without bound while the server is busy).
const MAX_EVENTS: usize = 8;

struct State {
    frames: DropOldestQueue<CapturedFrame>,
    events: DropOldestQueue<CaptureEvent>,
    /// The server wants frames (between a `StartStream` and its `StopStream`).
    streaming: bool,
    /// The source ran out during this stream.
    ended: bool,
    /// Bumped at every start and stop: a frame read across a stop (or stop and start) belongs to no
    /// stream and is discarded.
    generation: u64,
    shutdown: bool,
    next_number: u32,
    counts: CaptureCounts,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the server changes the state (to the capture thread) and when a frame or event
    /// arrives (to the server).
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic on the other side leaves consistent counters: keep going with them.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The capture thread and its queue, owned by the server.
pub struct Capture {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    description: String,
}

impl Capture {
    /// Starts the capture thread over `source`, with room for `capacity` frames (at least 1). It
    /// captures nothing until [`Capture::start`].
    pub fn spawn(source: Box<dyn FrameSource>, capacity: usize) -> std::io::Result<Capture> {
        let description = source.describe();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                frames: DropOldestQueue::new(capacity),
                events: DropOldestQueue::new(MAX_EVENTS),
                streaming: false,
                ended: false,
                generation: 0,
                shutdown: false,
                next_number: 0,
                counts: CaptureCounts::default(),
            }),
            changed: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("stdac-capture".into())
            .spawn(move || capture_loop(source, &thread_shared))?;
        Ok(Capture { shared, thread: Some(thread), description })
    }

    /// What the source is, for the log.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Starts a stream: frames flow into the queue from now on.
    pub fn start(&self) {
        let mut state = self.shared.lock();
        state.streaming = true;
        state.ended = false;
        state.generation += 1;
        self.shared.changed.notify_all();
    }

    /// Stops the stream; frames still queued are discarded (counted as dropped). Returns how many.
    pub fn stop(&self) -> usize {
        let mut state = self.shared.lock();
        state.streaming = false;
        state.generation += 1;
        let discarded = state.frames.clear();
        state.counts.dropped = state.counts.dropped.saturating_add(discarded as u32);
        self.shared.changed.notify_all();
        discarded
    }

    /// A stream is on.
    pub fn is_streaming(&self) -> bool {
        self.shared.lock().streaming
    }

    /// A stream is on and its source still gives frames: more may arrive in the queue.
    pub fn is_producing(&self) -> bool {
        let state = self.shared.lock();
        state.streaming && !state.ended
    }

    /// Work for the server: a stream producing frames, or frames or events waiting to be taken.
    pub fn has_work(&self) -> bool {
        let state = self.shared.lock();
        (state.streaming && !state.ended) || !state.frames.is_empty() || !state.events.is_empty()
    }

    /// The oldest queued frame, waiting up to `wait` for one; `None` when none came.
    pub fn next_frame(&self, wait: Duration) -> Option<CapturedFrame> {
        let state = self.shared.lock();
        let (mut state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, wait, |state| state.frames.is_empty() && state.events.is_empty())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.frames.pop()
    }

    /// The oldest event not yet taken. A failure comes at once, even while frames wait (a busy stream
    /// must not hide it); the source's end only once the frames before it have been taken.
    pub fn next_event(&self) -> Option<CaptureEvent> {
        let mut state = self.shared.lock();
        if state.frames.is_empty() {
            return state.events.pop();
        }
        // Failures only; an end waits for the queue to empty. Events keep their order otherwise.
        let failure = state.events.iter().position(|event| matches!(event, CaptureEvent::Failed(_)))?;
        state.events.remove(failure)
    }

    pub fn counts(&self) -> CaptureCounts {
        self.shared.lock().counts
    }

    /// Frames queued now.
    pub fn queued(&self) -> usize {
        self.shared.lock().frames.len()
    }

    /// The queue's capacity and the most frames it has held at once.
    pub fn queue_capacity_and_high_water(&self) -> (usize, usize) {
        let state = self.shared.lock();
        (state.frames.capacity(), state.frames.high_water())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            // The source returns within a frame period (a camera's read has a timeout).
            let _ = thread.join();
        }
    }
}

/// A stream is on, its source has frames left and was started for this stream: read the next frame.
fn source_is_due(state: &State, running: Option<u64>) -> bool {
    state.streaming && !state.ended && running == Some(state.generation)
}

fn capture_loop(mut source: Box<dyn FrameSource>, shared: &Shared) {
    // The generation the source was started for; `None` while it is stopped.
    let mut running: Option<u64> = None;
    loop {
        let generation = {
            let mut state = shared.lock();
            while !state.shutdown && !source_is_due(&state, running) {
                if running.is_some_and(|g| g != state.generation) {
                    // The stream stopped or restarted: let the source know before anything else.
                    drop(state);
                    source.stop();
                    running = None;
                    state = shared.lock();
                    continue;
                }
                if state.streaming && !state.ended {
                    let generation = state.generation;
                    drop(state);
                    let started = source.start();
                    state = shared.lock();
                    match started {
                        Ok(()) => running = Some(generation),
                        Err(error) => {
                            eprintln!("stdac-device: {error}");
                            state.events.push(CaptureEvent::Failed(error.to_string()));
                            state.ended = true;
                            shared.changed.notify_all();
                        }
                    }
                    continue;
                }
                state = shared.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.shutdown {
                break;
            }
            state.generation
        };
        let result = source.next_frame();
        let mut state = shared.lock();
        if !state.streaming || state.generation != generation {
            continue; // read across a stop: it belongs to no stream
        }
        match result {
            Ok(Some(frame)) => {
                let number = state.next_number;
                state.next_number = state.next_number.wrapping_add(1);
                state.counts.captured = state.counts.captured.saturating_add(1);
                if state.frames.push(CapturedFrame { number, frame }).is_some() {
                    state.counts.dropped = state.counts.dropped.saturating_add(1);
                }
            }
            Ok(None) => {
                state.ended = true;
                state.events.push(CaptureEvent::Ended);
            }
            Err(error) => {
                eprintln!("stdac-device: {error}");
                state.events.push(CaptureEvent::Failed(error.to_string()));
            }
        }
        shared.changed.notify_all();
    }
    if running.is_some() {
        source.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::PixelFormat;
    use crate::source::SourceError;

    /// A source of numbered 1 × 1 frames as fast as asked, failing every `fail_every`-th, ending after
    /// `limit`; its own counters say what the thread did with it.
    struct Counter {
        given: u32,
        limit: u32,
        fail_every: u32,
        starts: Arc<Mutex<(u32, u32)>>,
    }

    impl FrameSource for Counter {
        fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
            if self.given == self.limit {
                return Ok(None);
            }
            self.given += 1;
            if self.fail_every > 0 && self.given.is_multiple_of(self.fail_every) {
                return Err(SourceError::CameraSetup {
                    device: "counter".into(),
                    detail: "bad frame".into(),
                });
            }
            Ok(Some(Frame { width: 1, height: 1, format: PixelFormat::Grey8, bytes: vec![self.given as u8] }))
        }

        fn start(&mut self) -> Result<(), SourceError> {
            self.starts.lock().unwrap().0 += 1;
            Ok(())
        }

        fn stop(&mut self) {
            self.starts.lock().unwrap().1 += 1;
        }

        fn describe(&self) -> String {
            "counter".into()
        }
    }

    #[test]
    fn frames_flow_only_while_streaming_and_the_queue_drops_the_oldest() {
        let starts = Arc::new(Mutex::new((0, 0)));
        let source = Counter { given: 0, limit: 50, fail_every: 0, starts: Arc::clone(&starts) };
        let capture = Capture::spawn(Box::new(source), 3).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(capture.queued(), 0, "nothing before a stream starts");
        assert_eq!(capture.next_frame(Duration::ZERO), None);

        capture.start();
        // The source runs out after 50 frames, far faster than anyone takes them.
        while capture.is_producing() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(capture.next_event(), None, "the end waits for the frames before it");
        let counts = capture.counts();
        assert_eq!((counts.captured, counts.dropped), (50, 47));
        assert_eq!(capture.queue_capacity_and_high_water(), (3, 3));
        let numbers: Vec<u32> =
            std::iter::from_fn(|| capture.next_frame(Duration::ZERO)).map(|f| f.number).collect();
        assert_eq!(numbers, [47, 48, 49], "the newest frames, oldest first");
        assert_eq!(capture.next_event(), Some(CaptureEvent::Ended));
        assert!(capture.is_streaming() && !capture.is_producing());

        assert_eq!(capture.stop(), 0);
        drop(capture);
        assert_eq!(*starts.lock().unwrap(), (1, 1), "the source was started and stopped once");
    }

    #[test]
    fn a_stop_discards_queued_frames_and_failures_become_events() {
        let starts = Arc::new(Mutex::new((0, 0)));
        let source = Counter { given: 0, limit: 9, fail_every: 3, starts: Arc::clone(&starts) };
        let capture = Capture::spawn(Box::new(source), 10).unwrap();
        capture.start();
        while capture.is_producing() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Failures come at once, while frames still wait; the end only after them.
        let events: Vec<_> = std::iter::from_fn(|| capture.next_event()).collect();
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events.iter().all(|e| matches!(e, CaptureEvent::Failed(d) if d.contains("counter"))));
        assert_eq!(capture.queued(), 6);
        assert_eq!(capture.stop(), 6);
        assert_eq!(capture.next_event(), Some(CaptureEvent::Ended));
        assert_eq!(capture.counts(), CaptureCounts { captured: 6, dropped: 6 });
        assert_eq!(capture.next_frame(Duration::from_millis(20)), None);
    }
}
