//! [`KeepAliveMachine`]: every keep-alive decision, as a pure function of events and time.
//!
//! The machine is driven from outside: [`KeepAliveMachine::handle`] takes one [`Event`] stamped with the
//! caller's `now`; [`KeepAliveMachine::poll_action`] hands out what to do; [`KeepAliveMachine::poll_timeout`]
//! says when to call again with [`Event::Tick`]. Every `handle` first fires the timers that are due
//! (earliest first), so a throttled or late timer cannot hide a dead peer.
//!
//! This file holds the struct, the public calls and the dispatch; each concern lives in a file of its
//! own and owns the fields only it writes:
//! - [`setup`]: token → channel → subscriptions → socket. The setup is one explicit state
//!   ([`setup_state`]) and every transition is in [`KeepAliveMachine::setup_next`].
//! - [`reconnect`]: one reconnect at a time with backoff, the attempt counter, rollover (make before
//!   break).
//! - [`heartbeat`]: the open socket's heartbeats, acks, RTT, loss and dead-peer detection.
//! - [`inbound`]: what an inbound frame means, notifications and their deduplication.
//! - [`rest`]: the REST calls ([`rest_call`]: token, channel, subscriptions), their answers and the one
//!   retry state.
//! - [`sockets`]: sockets being closed (linger) or discarded; [`drain`]: a rollover's old socket, drained
//!   before it is closed.
//! - [`gaps`]: windows in which notifications may have been missed, reported once a socket is back.
//! - [`records`]: actions, audit entries, alerts, credential scrubbing, state changes and the stop.
//!
//! One setup runs at a time and one REST call is in flight at a time. A lost socket schedules exactly one
//! reconnect, after a full-jitter backoff delay; the attempt counter resets only after `min_uptime` of health.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::event::{Action, AuditEvent, Event};
use crate::http::HttpResponse;
use crate::rng::Rng;
use crate::state::State;
use crate::stats::Stats;
use crate::time::WallClock;
use crate::timers::{Timer, TimerTable};

mod drain;
mod gaps;
mod heartbeat;
mod inbound;
mod reconnect;
mod records;
mod rest;
mod rest_call;
mod setup;
mod setup_state;
mod sockets;

use gaps::Gaps;
use heartbeat::{Conn, Heartbeat};
use inbound::Inbound;
use records::Records;
use rest::Rest;
use setup_state::{Setup, SetupKind};
use sockets::Sockets;

/// How long a Genesys channel lives without resubscription.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Close code for a peer declared dead (the project's own range, 4000-4999).
pub const CLOSE_DEAD_PEER: u16 = 4001;
/// Close code for the old socket after a planned-close rollover.
pub const CLOSE_ROLLOVER: u16 = 4002;
/// Close code for a socket that did not open in time.
pub const CLOSE_CONNECT_TIMEOUT: u16 = 4003;
/// Close code for a socket whose write failed.
pub const CLOSE_SEND_FAILED: u16 = 1011;
/// How long a rollover's old socket may keep delivering after its close frame.
const ROLLOVER_LINGER: Duration = Duration::from_secs(5);
/// Action slots kept once the queue is drained. None: each is 144 bytes per connection, and a steady
/// connection's queue is empty between inputs (re-growing it costs an allocation per heartbeat).
const ACTIONS_KEPT: usize = 0;

/// The sans-IO keep-alive state machine. See the [crate docs](crate) for the run loop.
#[derive(Debug)]
pub struct KeepAliveMachine {
    // Shared by every concern: read by all, each writing only through its own methods.
    config: Config,
    rng: Rng,
    wall: WallClock,
    now: Instant,
    state: State,
    timers: TimerTable,
    stats: Stats,
    backoff: Backoff,
    /// The open socket and its heartbeat state (replaced by the setup, cleared with the connection).
    active: Option<Conn>,
    // One sub-struct per concern.
    setup: Setup,
    heartbeat: Heartbeat,
    inbound: Inbound,
    rest: Rest,
    sockets: Sockets,
    gaps: Gaps,
    records: Records,
}

impl KeepAliveMachine {
    /// Validates `config` and creates the machine. `now` and `wall` anchor time (wall-clock values in frames
    /// and audit entries derive from them); `seed` drives jitter and connection ids. The first actions (a
    /// token request or a connect) are ready at once.
    pub fn new(
        config: Config,
        now: Instant,
        wall: SystemTime,
        seed: u64,
    ) -> Result<Self, crate::ConfigError> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let connection_id = rng.uuid_v4();
        let mut m = KeepAliveMachine {
            heartbeat: Heartbeat::new(config.rtt_window),
            backoff: Backoff {
                base: config.backoff_base,
                factor: config.backoff_factor,
                max: config.backoff_max,
            },
            rest: Rest::new(&config.topics),
            setup: Setup::new(connection_id),
            inbound: Inbound::default(),
            sockets: Sockets::default(),
            gaps: Gaps::default(),
            records: Records::default(),
            config,
            rng,
            wall: WallClock::new(now, wall),
            now,
            state: State::Connecting,
            timers: TimerTable::default(),
            stats: Stats::default(),
            active: None,
        };
        m.start_setup(SetupKind::Connect);
        Ok(m)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The connection state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True once the machine has stopped for good.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// The id of the current connection (a UUID, as in audit entries).
    pub fn connection_id(&self) -> &str {
        &self.setup.connection_id
    }

    /// The anchor that maps this machine's instants to wall-clock times (as given to [`Self::new`]).
    #[doc(hidden)]
    pub fn wall_clock(&self) -> WallClock {
        self.wall
    }

    /// The topics subscribed (or to be subscribed).
    pub fn topics(&self) -> &[String] {
        &self.rest.topics
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        let latency = &self.heartbeat.latency;
        s.state = self.state;
        s.avg_latency_ms = latency.avg_ms();
        [s.rtt_p50_ms, s.rtt_p95_ms, s.rtt_p99_ms] = latency.percentiles_ms([50.0, 95.0, 99.0]);
        s.packet_loss = latency.loss();
        s.rtt_samples = latency.samples();
        s.uptime_ms = self
            .active
            .as_ref()
            .and_then(|c| c.opened_at)
            .map(|t| self.now.saturating_duration_since(t).as_millis() as u64)
            .unwrap_or(0);
        s
    }

    /// The counters and histograms as the machine keeps them, by reference: no copy, no allocation (for a
    /// driver that exports them often). The fields [`KeepAliveMachine::stats`] derives from the RTT window
    /// (`state`, `avg_latency_ms`, the percentiles, `packet_loss`, `rtt_samples`, `uptime_ms`) are not
    /// filled in here.
    pub fn counters(&self) -> &Stats {
        &self.stats
    }

    /// The RTT of the most recent answered heartbeat on the current socket, if any.
    pub fn last_rtt(&self) -> Option<std::time::Duration> {
        self.heartbeat.latency.last()
    }

    /// The next action to perform, in the order decided. Drain after every `handle`.
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.records.actions.pop_front();
        if self.records.actions.is_empty() && self.records.actions.capacity() > ACTIONS_KEPT {
            // A burst (connecting, a rollover) grew the queue; a steady connection's is empty between
            // inputs. (`VecDeque::shrink_to` may keep capacity: a new queue frees it.)
            self.records.actions = VecDeque::with_capacity(ACTIONS_KEPT);
        }
        action
    }

    /// When to call `handle(now, Event::Tick)` next: the earliest deadline, rounded up to the
    /// [`Config::timer_slack`] grid of the wall clock so that machines in one process fall due together.
    /// Once stopped, only the linger deadline of a socket still closing; `None` when
    /// [`KeepAliveMachine::is_finished`]. A tick before it fires nothing that is not due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = if self.is_stopped() {
            self.timers.get(Timer::Linger)
        } else {
            self.timers.next()
        };
        deadline.map(|d| self.wall.align_up(d, self.timer_slack()))
    }

    /// The slack used: [`Config::timer_slack`], at most a tenth of `min_interval`.
    fn timer_slack(&self) -> std::time::Duration {
        self.config.timer_slack.min(self.config.min_interval / 10)
    }

    /// Stopped, and every socket closed or discarded: nothing will ever be asked of the driver again.
    pub fn is_finished(&self) -> bool {
        self.is_stopped() && self.sockets.closing.is_empty() && self.sockets.draining.is_empty()
    }

    /// Feeds one event at time `now`. Time that goes backwards is clamped (and counted). Due timers fire
    /// first, then the event is processed. Never panics, whatever the input.
    pub fn handle(&mut self, now: Instant, event: Event) {
        if now < self.now {
            self.stats.clock_regressions += 1;
            if !self.is_stopped() {
                self.audit(AuditEvent::ClockWentBackwards, 0, None);
            }
        } else {
            self.now = now;
        }
        if self.is_stopped() {
            if self
                .timers
                .get(Timer::Linger)
                .is_some_and(|d| d <= self.now)
            {
                self.expire_lingers();
            }
            self.after_stop(event);
            return;
        }
        self.fire_timers();
        if !self.is_stopped() {
            self.dispatch(event);
        }
    }

    /// Each event to the concern it belongs to.
    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Tick => {}
            Event::Opened { socket } => self.on_opened(socket),
            Event::FrameReceived { socket, text } => self.on_text(socket, &text),
            Event::BinaryReceived { socket, data } => self.on_binary(socket, data.len()),
            Event::SendCompleted { socket, frame } => self.on_send_completed(socket, frame),
            Event::SendFailed {
                socket,
                frame,
                error,
            } => self.on_send_failed(socket, frame, error),
            Event::Closed {
                socket,
                code,
                reason,
            } => self.on_closed(socket, code, reason),
            Event::ConnectFailed {
                socket,
                status,
                retry_after,
                error,
            } => self.on_connect_failed(socket, status, retry_after, error),
            Event::HttpResponse(resp) => self.on_http_response(resp),
            Event::HttpFailed { request, error } => self.on_http_failed(request, error),
            Event::TokenExpired => self.on_token_expired(),
            Event::Subscribe { topics } => self.on_subscribe(topics),
            Event::Shutdown => self.shutdown(),
        }
    }

    /// After `Stopped` nothing is acted on. What the driver still reports about sockets the machine closed
    /// (their last frames, write reports, the close itself) and answers to requests it had sent are
    /// expected leftovers; anything else is counted as unexpected.
    fn after_stop(&mut self, event: Event) {
        let leftover = match &event {
            Event::Tick | Event::Shutdown => true,
            Event::Closed { socket, .. } => self.forget_socket(*socket),
            Event::Opened { socket }
            | Event::FrameReceived { socket, .. }
            | Event::BinaryReceived { socket, .. }
            | Event::SendCompleted { socket, .. }
            | Event::SendFailed { socket, .. }
            | Event::ConnectFailed { socket, .. } => {
                self.is_closing(*socket) || self.was_discarded(*socket)
            }
            Event::HttpResponse(HttpResponse { request, .. })
            | Event::HttpFailed { request, .. } => request.0 <= self.rest.next_request,
            Event::TokenExpired | Event::Subscribe { .. } => false,
        };
        if !leftover {
            self.stats.unexpected_events += 1;
        }
    }

    fn fire_timers(&mut self) {
        // Bounded: each pass clears the timer it fires; a handler may re-arm a timer in the future only.
        for _ in 0..64 {
            let Some((timer, deadline)) = self.timers.pop_due(self.now) else {
                return;
            };
            if timer == Timer::Heartbeat {
                // How late the schedule ran: the driver's wake-up and this call's own delay.
                self.stats
                    .heartbeat_lateness
                    .record(self.now.saturating_duration_since(deadline));
            }
            self.on_timer(timer, deadline);
            if self.is_stopped() {
                return;
            }
        }
    }

    /// Each timer to the concern that armed it.
    fn on_timer(&mut self, timer: Timer, deadline: Instant) {
        match timer {
            Timer::Heartbeat => self.send_heartbeat(Some(deadline)),
            Timer::AckTimeout => self.on_ack_timeout(),
            Timer::Idle => self.on_idle_timeout(),
            Timer::MinUptime => self.on_min_uptime(),
            Timer::Reconnect => self.on_reconnect_timer(),
            Timer::ConnectTimeout => self.on_connect_timeout(),
            Timer::RolloverDeadline => self.on_rollover_deadline(),
            Timer::TokenRefresh => self.on_token_refresh_timer(),
            Timer::HttpRetry => self.on_http_retry_timer(),
            Timer::HttpTimeout => self.on_http_timeout(),
            Timer::Resubscribe => self.on_resubscribe_timer(),
            Timer::Linger => self.expire_lingers(),
        }
    }
}
