//! Serving connections: the accept loop, the connection cap, and the timers that close idle
//! and half-sent connections.
//!
//! Every open connection costs the process a file, and the file limit is finite: a client that
//! opens connections and sends nothing, or sends half a request head and stops (slowloris),
//! must not be able to hold them forever. So each connection has one timer:
//!
//! * **idle** — no request in flight: none sent yet, or between keep-alive requests. Closed
//!   after `server.idle_timeout`. A request is in flight from the moment its head is parsed
//!   until its answer's last byte is handed to the socket, so a held long-poll or an open SSE
//!   stream is never idle, however quiet.
//! * **head** — the first byte of a request head has arrived on an idle connection. Closed
//!   (without an answer) `server.header_read_timeout` after that first byte unless the head is
//!   complete; trickling bytes does not extend it. (hyper's own header timeout starts whenever
//!   hyper waits for a head, idle keep-alive included, so it cannot tell the two apart.)
//! * **in flight** — nothing expires; `server.request_timeout` bounds the handler.
//!
//! Requests change the state without waking the connection's task (that would cost a wake-up
//! and a timer per request): the timer looks at the state when it fires, and while nothing is
//! due it fires at least every `header_read_timeout`, so a head that starts between two looks
//! is still cut exactly `header_read_timeout` after its first byte.
//!
//! At most `server.max_connections` are served at once. When they are all taken, a new
//! connection first takes the place of the *longest-idle* one (of a bounded sample), which is
//! closed (as nginx
//! closes keep-alive connections when it runs short): idle connections cannot hold the server
//! full, so an attacker must keep requests in flight, and those are bounded by
//! `request_timeout`, `longpoll.max_waiters` and `sse.max_streams`. Only when every connection
//! is busy do a few more (`server.reserve_connections`) get accepted to answer one request at
//! once and close: `GET /healthz` answers `200` (a health check still sees the process alive,
//! the cap is not an outage) and anything else `503 too_many_connections`. A reserve connection
//! gets `header_read_timeout` to send its head. Beyond the reserve a connection is closed as
//! soon as it is accepted, which costs nothing but the accept.
//!
//! Shutdown stops accepting, closes idle connections at once (held long-polls and streams end
//! through `Inner::closing`), lets in-flight requests finish for up to
//! `server.request_timeout`, then closes whatever is left.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::routing::future::RouteFuture;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::AppState;
use crate::settings::ServerSettings;
use crate::time::later;

/// Marks a request that arrived on a reserve connection: the `admit` middleware answers it
/// `503 too_many_connections` unless it asks for `/healthz`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverCapacity;

/// How long the accept loop pauses after an error that is not about one connection (e.g. the
/// process is out of files), so that it does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Displacing looks at no more than this many connections, and picks the longest-idle of the
/// first [`DISPLACE_SAMPLE`] idle ones among them: the accept loop does it, so its cost is
/// bounded however many connections are open (an approximation of least-recently-used, as
/// Redis evicts).
const DISPLACE_SCAN: usize = 4096;
/// See [`DISPLACE_SCAN`].
const DISPLACE_SAMPLE: usize = 64;

/// How long a connection waits for the slot of the idle connection it displaced. An idle
/// connection closes at once; one that turned busy meanwhile finishes its request first, and
/// the newcomer goes to the reserve after this.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// What the connections are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serve requests.
    Serving,
    /// Finish the request in flight, then close; close at once when idle.
    Draining,
    /// Close now.
    Closed,
}

/// Which pool a connection holds a slot of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    /// `server.max_connections`: served normally.
    Main,
    /// `server.reserve_connections`: one request, answered at once.
    Reserve,
}

impl Pool {
    fn label(self) -> &'static str {
        match self {
            Pool::Main => "main",
            Pool::Reserve => "reserve",
        }
    }
}

/// The accept loop's state, shared with every connection task.
#[derive(Debug)]
struct Shared {
    state: AppState,
    app: Router,
    /// Slots of `server.max_connections`.
    main: Arc<Semaphore>,
    /// Slots of `server.reserve_connections`.
    reserve: Arc<Semaphore>,
    /// What connections are told to do.
    phase: watch::Sender<Phase>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// The main pool's connections, by id, so that the longest-idle one can be displaced.
    conns: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
    /// Origin of every [`Activity`]'s timestamps.
    epoch: Instant,
}

impl Shared {
    /// Tells the longest-idle main connection (of a bounded sample, see [`DISPLACE_SCAN`]) to
    /// close; false when none is idle.
    fn displace_longest_idle(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let victim = conns
            .values()
            .take(DISPLACE_SCAN)
            .filter(|a| a.in_flight.load(Ordering::Acquire) == 0)
            .filter(|a| !a.displaced.load(Ordering::Acquire))
            .take(DISPLACE_SAMPLE)
            .min_by_key(|a| a.since.load(Ordering::Acquire));
        match victim {
            Some(victim) => {
                victim.displaced.store(true, Ordering::Release);
                victim.displace.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serves `state`'s router on `listener` until `shutdown` resolves, then drains (see the
/// module docs).
pub(crate) async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let settings: &ServerSettings = &state.inner.settings.server;
    let (max, reserve, drain) = (
        settings.max_connections,
        settings.reserve_connections,
        settings.request_timeout,
    );
    let shared = Arc::new(Shared {
        app: crate::app(state.clone()),
        main: Arc::new(Semaphore::new(max)),
        reserve: Arc::new(Semaphore::new(reserve)),
        phase: watch::channel(Phase::Serving).0,
        header_read_timeout: settings.header_read_timeout,
        idle_timeout: settings.idle_timeout,
        conns: Mutex::default(),
        next_id: AtomicU64::new(0),
        epoch: Instant::now(),
        state,
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => admit(&shared, stream, peer),
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed; pausing");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_PAUSE) => {}
                }
            }
        }
    }
    drop(listener);
    shared.phase.send_replace(Phase::Draining);
    // Every connection holds a permit until its task ends: holding them all means all ended.
    // Both counts fit a u32 (settings::CONNECTIONS_LIMIT).
    let all_closed = || async {
        let _ = shared.main.acquire_many(max as u32).await;
        let _ = shared.reserve.acquire_many(reserve as u32).await;
    };
    if tokio::time::timeout(drain, all_closed()).await.is_err() {
        shared.phase.send_replace(Phase::Closed);
        all_closed().await;
    }
}

/// Errors of one connection that the accept loop shrugs off (as axum's `serve` does).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Gives an accepted connection a slot of the main pool (displacing the longest-idle
/// connection when it is full), else of the reserve, else closes it.
fn admit(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    // Subscribed here, before the loop can move on to draining, so no phase change is missed.
    let phase = shared.phase.subscribe();
    if let Ok(permit) = Arc::clone(&shared.main).try_acquire_owned() {
        tokio::spawn(drive(
            Arc::clone(shared),
            stream,
            peer,
            Pool::Main,
            permit,
            phase,
        ));
        return;
    }
    if shared.displace_longest_idle() {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            let freed =
                tokio::time::timeout(EVICTION_WAIT, Arc::clone(&shared.main).acquire_owned());
            match freed.await {
                Ok(Ok(permit)) => drive(shared, stream, peer, Pool::Main, permit, phase).await,
                _ => {
                    if let Some(permit) = reserve_slot(&shared) {
                        drive(shared, stream, peer, Pool::Reserve, permit, phase).await;
                    }
                }
            }
        });
        return;
    }
    if let Some(permit) = reserve_slot(shared) {
        tokio::spawn(drive(
            Arc::clone(shared),
            stream,
            peer,
            Pool::Reserve,
            permit,
            phase,
        ));
    }
}

/// Every main slot is busy: a reserve slot, or none (and the connection, dropped, is closed).
fn reserve_slot(shared: &Arc<Shared>) -> Option<OwnedSemaphorePermit> {
    let permit = Arc::clone(&shared.reserve).try_acquire_owned().ok();
    if permit.is_none() {
        shared.state.inner.metrics.connection_closed("refused");
    }
    permit
}

/// Counts a connection in `sim_connections_open`, and lists a main one among those that can be
/// displaced, for as long as its task lives.
struct Open<'a> {
    shared: &'a Shared,
    pool: Pool,
    id: u64,
}

impl<'a> Open<'a> {
    fn new(shared: &'a Shared, pool: Pool, activity: &Arc<Activity>) -> Self {
        shared
            .state
            .inner
            .metrics
            .connections_open(pool.label(), 1.0);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if pool == Pool::Main {
            shared
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, Arc::clone(activity));
        }
        Open { shared, pool, id }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        if self.pool == Pool::Main {
            self.shared
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.id);
        }
        self.shared
            .state
            .inner
            .metrics
            .connections_open(self.pool.label(), -1.0);
    }
}

/// Serves one connection until it ends, its timer fires, or shutdown closes it.
async fn drive(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    pool: Pool,
    _permit: OwnedSemaphorePermit,
    mut phase: watch::Receiver<Phase>,
) {
    let metrics = &shared.state.inner.metrics;
    let activity = Arc::new(Activity::new(shared.epoch));
    let _open = Open::new(&shared, pool, &activity);
    let service = PerConnection {
        app: shared.app.clone(),
        peer,
        activity: Arc::clone(&activity),
        over_capacity: pool == Pool::Reserve,
    };
    let io = TokioIo::new(Watched {
        io: stream,
        activity: Arc::clone(&activity),
    });
    let timeouts = Timeouts {
        idle: match pool {
            Pool::Main => shared.idle_timeout,
            Pool::Reserve => shared.header_read_timeout,
        },
        head: shared.header_read_timeout,
    };
    let conn = http1::Builder::new()
        .keep_alive(pool == Pool::Main)
        // Heads are timed here (see the module docs); hyper's timer would also cut idle ones.
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    // Once told to close an idle connection, how long it may take to finish writing.
    let mut close_by: Option<Instant> = None;
    loop {
        let deadline = close_by.unwrap_or_else(|| activity.next_look(timeouts, Instant::now()));
        tokio::select! {
            biased;
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                break;
            }
            changed = phase.changed() => match changed.map(|()| *phase.borrow_and_update()) {
                Ok(Phase::Serving) => {}
                Ok(Phase::Draining) => conn.as_mut().graceful_shutdown(),
                Ok(Phase::Closed) | Err(_) => break,
            },
            () = activity.displace.notified() => {
                if close_by.is_none() {
                    metrics.connection_closed("displaced");
                    conn.as_mut().graceful_shutdown();
                    close_by = Some(later(Instant::now(), timeouts.head));
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                if close_by.is_some() {
                    break;
                }
                match activity.expired(timeouts, Instant::now()) {
                    Some(Expired::Head) => {
                        metrics.connection_closed("header_timeout");
                        break;
                    }
                    Some(Expired::Idle) => {
                        metrics.connection_closed("idle_timeout");
                        conn.as_mut().graceful_shutdown();
                        close_by = Some(later(Instant::now(), timeouts.head));
                    }
                    None => {}
                }
            }
        }
    }
}

/// The two timer lengths of one connection.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    idle: Duration,
    head: Duration,
}

/// Which timer fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expired {
    Idle,
    Head,
}

/// What one connection is doing, as far as its timer (and the cap) cares.
#[derive(Debug)]
struct Activity {
    /// Requests in flight (HTTP/1 has at most one; a counter is simply robust).
    in_flight: AtomicUsize,
    /// Bytes of a new request head have arrived while idle.
    head: AtomicBool,
    /// When the connection last became idle, or when the current head began: nanoseconds
    /// since `epoch` (an atomic, so that the cap can compare connections without locks).
    since: AtomicU64,
    epoch: Instant,
    /// Told to close to make room for a new connection.
    displaced: AtomicBool,
    /// Wakes the connection's task when it is displaced.
    displace: Notify,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let activity = Activity {
            in_flight: AtomicUsize::new(0),
            head: AtomicBool::new(false),
            since: AtomicU64::new(0),
            epoch,
            displaced: AtomicBool::new(false),
            displace: Notify::new(),
        };
        activity.mark();
        activity
    }

    fn mark(&self) {
        let since = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.since.store(since, Ordering::Release);
    }

    /// Bytes arrived: on an idle connection they start a head (once).
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.head.swap(true, Ordering::AcqRel) {
            self.mark();
        }
    }

    /// A request head was parsed: the connection is busy until the answer is sent.
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head.store(false, Ordering::Release);
        InFlight(Arc::clone(self))
    }

    /// The limit that applies now and when it runs out; none while a request is in flight.
    fn deadline(&self, t: Timeouts) -> Option<(Expired, Instant)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = later(
            self.epoch,
            Duration::from_nanos(self.since.load(Ordering::Acquire)),
        );
        Some(if self.head.load(Ordering::Acquire) {
            (Expired::Head, later(since, t.head))
        } else {
            (Expired::Idle, later(since, t.idle))
        })
    }

    /// When the timer should next look: at the deadline, but never later than
    /// `header_read_timeout` from `now` unless a head is being timed (see the module docs).
    fn next_look(&self, t: Timeouts, now: Instant) -> Instant {
        let soon = later(now, t.head);
        match self.deadline(t) {
            Some((Expired::Head, at)) => at,
            Some((Expired::Idle, at)) => at.min(soon),
            None => soon,
        }
    }

    /// Which limit, if any, the connection has run past at `now`.
    fn expired(&self, t: Timeouts, now: Instant) -> Option<Expired> {
        self.deadline(t)
            .filter(|(_, at)| now >= *at)
            .map(|(limit, _)| limit)
    }
}

/// A request in flight; when dropped (its answer sent, or abandoned) the connection is idle.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.mark();
        }
    }
}

/// The router as hyper sees it on one connection: adds the peer address (`ConnectInfo`) and
/// the reserve mark, and keeps the connection busy until the answer's body is sent.
#[derive(Clone)]
struct PerConnection {
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
    over_capacity: bool,
}

impl hyper::service::Service<hyper::Request<Incoming>> for PerConnection {
    type Response = hyper::Response<Tracked>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        req.extensions_mut().insert(ConnectInfo(self.peer));
        if self.over_capacity {
            req.extensions_mut().insert(OverCapacity);
        }
        // The router is always ready (axum documents `poll_ready` as a no-op for it).
        let answer = tower::Service::call(&mut self.app.clone(), req);
        Answer {
            answer,
            in_flight: Some(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's answer to one request, its body holding the request in flight.
    struct Answer {
        #[pin]
        answer: RouteFuture<Infallible>,
        in_flight: Option<InFlight>,
    }
}

impl Future for Answer {
    type Output = Result<hyper::Response<Tracked>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.answer.poll(cx))?;
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(response.map(|body| Tracked {
            body,
            _in_flight: in_flight,
        })))
    }
}

/// An answer's body that holds its request in flight until hyper drops it (sent or abandoned).
struct Tracked {
    body: Body,
    _in_flight: Option<InFlight>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, reporting arriving bytes to the connection's [`Activity`].
struct Watched {
    io: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.on_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        idle: Duration::from_secs(60),
        head: Duration::from_secs(10),
    };

    #[tokio::test(start_paused = true)]
    async fn the_timer_tells_idle_from_a_half_sent_head_and_ignores_requests_in_flight() {
        let t0 = Instant::now();
        let a = Arc::new(Activity::new(t0));
        // Idle: due after idle_timeout, looked at every header_read_timeout meanwhile.
        assert_eq!(a.next_look(T, t0), t0 + T.head);
        assert_eq!(a.expired(T, t0 + Duration::from_secs(59)), None);
        assert_eq!(a.expired(T, t0 + T.idle), Some(Expired::Idle));
        // A head starting at 30 s is due at 40 s, however it trickles.
        tokio::time::advance(Duration::from_secs(30)).await;
        a.on_read();
        tokio::time::advance(Duration::from_secs(5)).await;
        a.on_read();
        let now = Instant::now();
        assert_eq!(a.next_look(T, now), t0 + Duration::from_secs(40));
        assert_eq!(
            a.expired(T, t0 + Duration::from_secs(40)),
            Some(Expired::Head)
        );
        // In flight: nothing expires, however long.
        let in_flight = a.begin();
        assert_eq!(a.expired(T, now + Duration::from_secs(3600)), None);
        assert_eq!(a.next_look(T, now), now + T.head);
        // Answered at 50 s: idle again from then.
        tokio::time::advance(Duration::from_secs(15)).await;
        drop(in_flight);
        let answered = Instant::now();
        assert_eq!(a.expired(T, answered + Duration::from_secs(59)), None);
        assert_eq!(a.expired(T, answered + T.idle), Some(Expired::Idle));
    }
}
