//! The `ours-webhook` strategy's rig: a loopback webhook receiver in front of one job set.
//!
//! Jobs are created with `callback_url` pointing at the receiver (`POST /hook`, Standard
//! Webhooks verified with the simulator's secret, `webhook::axum::route` with the set's
//! handle as its sink); each is added to the set, which ends it on its webhook or reads it on
//! its safety net. A task reads the set's events and hands each job's ending to whoever waits
//! for it, by key.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use translation_status::jobset::{JobEvent, JobKey, JobSetHandle, JobSetOptions, SafetyNet};
use translation_status::webhook::axum::route;
use translation_status::webhook::{Receiver, Secret};
use translation_status::{Client, Completion, Error, JobRef, WaitOptions};

/// A job's ending, as the set reported it.
type Ending = Result<Completion, Error>;

/// Where a job's ending goes: to its waiter, or kept until the waiter asks.
enum Slot {
    Waiting(oneshot::Sender<Ending>),
    Ended(Box<Ending>),
}

/// Each job's slot, and the jobs whose ending was handed over (a second ending of one of
/// them is counted: a job's result must come once).
#[derive(Debug, Default)]
struct Books {
    slots: HashMap<JobKey, Slot>,
    ended: HashSet<JobKey>,
    twice: usize,
}

type Slots = Arc<Mutex<Books>>;

/// A receiver and a job set that expects webhooks.
#[derive(Debug)]
pub struct Rig {
    handle: JobSetHandle,
    /// The receiver's URL, each job's `callback_url`.
    pub callback: String,
    slots: Slots,
    tasks: [JoinHandle<()>; 2],
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Slot::Waiting(_) => "Waiting",
            Slot::Ended(_) => "Ended",
        })
    }
}

impl Rig {
    /// A set on `client` waiting with `wait` (deadline included), its safety net's floor and
    /// cold-start read scaled by `scale`, and a receiver verifying with `secret`.
    pub async fn start(
        client: &Client,
        wait: WaitOptions,
        scale: f64,
        secret: &str,
    ) -> anyhow::Result<Rig> {
        let net = SafetyNet::Learned {
            quantile: 0.99,
            floor: Duration::from_secs(1).mul_f64(scale),
            cold: Duration::from_secs(300).mul_f64(scale),
        };
        // Batched reads off: each job's report counts the requests made for it alone.
        let options = JobSetOptions::new()
            .wait_options(wait)
            .batch_reads(false)
            .webhooks(net);
        let mut jobs = client.job_set(options)?;
        let receiver = Receiver::standard_webhooks(Secret::whsec(secret)?).build()?;
        let app = axum::Router::new().route("/hook", route(receiver, jobs.handle()));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the webhook receiver")?;
        let callback = format!("http://{}/hook", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let handle = jobs.handle();
        let slots: Slots = Arc::default();
        let routed = Arc::clone(&slots);
        let router = tokio::spawn(async move {
            // The set's stream ends whenever no job is left; jobs come later too.
            loop {
                while let Some(event) = jobs.next().await {
                    if let JobEvent::Finished { key, result, .. } = event {
                        hand_over(&routed, key, result);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Ok(Rig {
            handle,
            callback,
            slots,
            tasks: [server, router],
        })
    }

    /// Jobs whose ending the set reported more than once (it must be 0).
    pub fn duplicated(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .twice
    }

    /// Adds `job` to the set and waits for its ending.
    pub async fn wait(&self, job: JobRef) -> anyhow::Result<Ending> {
        let key = self.handle.add(job)?;
        let (tell, told) = oneshot::channel();
        {
            let mut books = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match books.slots.remove(&key) {
                Some(Slot::Ended(ending)) => return Ok(*ending),
                _ => {
                    books.slots.insert(key, Slot::Waiting(tell));
                }
            }
        }
        told.await.context("the job set stopped")
    }
}

fn hand_over(slots: &Slots, key: JobKey, ending: Ending) {
    let mut books = slots.lock().unwrap_or_else(PoisonError::into_inner);
    if !books.ended.insert(key) {
        books.twice += 1;
        return;
    }
    match books.slots.remove(&key) {
        Some(Slot::Waiting(tell)) => {
            let _ = tell.send(ending);
        }
        _ => {
            books.slots.insert(key, Slot::Ended(Box::new(ending)));
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
