//! What fails a run besides the model: the code under test reporting a bug of its own, as a
//! `tracing::error!` event or a panic.
//!
//! Every run installs, for its thread only, a subscriber whose one layer records error
//! events; the event loop turns them into failures after each event. Panics are caught per
//! run, so that a soak run goes on to the next seed and the report names the failing one.

use std::any::Any;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Error events seen during a run, as one line each (target, message, fields).
#[derive(Clone, Default)]
pub struct ErrorEvents(Arc<Mutex<Vec<String>>>);

impl ErrorEvents {
    /// The events recorded since the last call.
    pub fn take(&self) -> Vec<String> {
        let mut events = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut *events)
    }

    fn push(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}

struct ErrorLayer(ErrorEvents);

impl<S: Subscriber> Layer<S> for ErrorLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = Line(format!("{}:", event.metadata().target()));
        event.record(&mut line);
        self.0.push(line.0);
    }
}

/// Formats an event's fields: the message as it is, the others as `name=value`.
struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = if field.name() == "message" {
            write!(self.0, " {value:?}")
        } else {
            write!(self.0, " {}={value:?}", field.name())
        };
    }
}

/// Runs `f` on this thread with its error events recorded into `errors`. A panic in `f` is
/// caught and comes back as its message.
pub fn watched<R>(errors: &ErrorEvents, f: impl FnOnce() -> R) -> Result<R, String> {
    let layer = ErrorLayer(errors.clone()).with_filter(LevelFilter::ERROR);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        // The simulation's state is not touched again after a panic, only reported from.
        catch_unwind(AssertUnwindSafe(f)).map_err(|p| panic_message(p.as_ref()))
    })
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_events_are_recorded_and_others_not() {
        let errors = ErrorEvents::default();
        let r = watched(&errors, || {
            tracing::warn!("only a warning");
            tracing::error!(txn = 7, "lost a lock");
            5
        });
        assert_eq!(r, Ok(5));
        let seen = errors.take();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].contains("lost a lock") && seen[0].contains("txn=7"),
            "{seen:?}"
        );
        assert!(errors.take().is_empty(), "taken once");
    }

    #[test]
    fn a_panic_comes_back_as_its_message() {
        let errors = ErrorEvents::default();
        let r: Result<(), String> = watched(&errors, || panic!("broken invariant {}", 3));
        assert_eq!(r, Err("broken invariant 3".to_string()));
        let r: Result<(), String> = watched(&errors, || panic!("static"));
        assert_eq!(r, Err("static".to_string()));
    }

    #[test]
    fn events_outside_a_run_are_not_recorded() {
        let errors = ErrorEvents::default();
        let _ = watched(&errors, || ());
        tracing::error!("after the run");
        assert!(errors.take().is_empty());
    }
}
