//! Reading request bodies under two bounds: each body's own size
//! (`--max-body-bytes`, 413) and the bytes of all bodies being read or held
//! at once (`--max-body-bytes-in-flight`), so a flood of large requests
//! waits for room — and past a short wait gets 503 — instead of growing
//! memory without bound. A body must also arrive within the header-read
//! timeout, so a client cannot hold room by sending slowly.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// Budget is counted in units of this many bytes.
const UNIT: usize = 1024;
/// How long a body waits for room before the request is refused.
const WAIT_FOR_ROOM: Duration = Duration::from_secs(5);

/// The bytes of request bodies the process holds at most.
#[derive(Debug)]
pub struct BodyBudget {
    room: Arc<Semaphore>,
    bytes: usize,
}

/// Room held for a body; released when the last clone is dropped (the
/// permit inside is only ever dropped, never read). A request carries it in
/// its extensions once its body is read (the peer listener reads a body to
/// check its signature, and the handler reuses it).
#[derive(Clone, Debug)]
pub struct Held(Option<Arc<OwnedSemaphorePermit>>);

impl Held {
    /// Bytes of budget this body holds (a multiple of the unit).
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits() * UNIT)
    }
}

fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            room: Arc::new(Semaphore::new(bytes.div_ceil(UNIT))),
            bytes,
        }
    }

    /// Reads `body` (at most `limit` bytes, within `deadline`), holding room
    /// for it in the budget. `prepaid` is room already held for this body.
    pub async fn read(
        &self,
        headers: &HeaderMap,
        body: crate::body::Body,
        limit: u64,
        deadline: Duration,
        prepaid: Option<Held>,
    ) -> Result<(Bytes, Held)> {
        let declared = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(Error::PayloadTooLarge(limit));
        }
        let max = usize::try_from(limit).unwrap_or(usize::MAX);
        let paid = prepaid.is_some();
        let reading = async {
            let mut held: Option<OwnedSemaphorePermit> = None;
            if let (false, Some(n)) = (paid, declared) {
                held = Some(self.acquire(units(usize::try_from(n).unwrap_or(max))).await?);
            }
            let mut body = body;
            // A body that comes in one frame (most do) is kept as it came;
            // only a second frame makes a copy.
            let mut first = Bytes::new();
            let mut read = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame =
                    frame.map_err(|e| Error::InvalidRequest(format!("cannot read request body: {e}")))?;
                let Ok(data) = frame.into_data() else { continue };
                let total = first.len() + read.len() + data.len();
                if total > max {
                    return Err(Error::PayloadTooLarge(limit));
                }
                let have = held.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
                let need = units(total).saturating_sub(u32::try_from(have).unwrap_or(u32::MAX));
                if !paid && need > 0 {
                    let more = self.acquire(need).await?;
                    match held.as_mut() {
                        Some(permit) => permit.merge(more),
                        None => held = Some(more),
                    }
                }
                if first.is_empty() && read.is_empty() {
                    first = data;
                } else {
                    if read.is_empty() {
                        read.extend_from_slice(&std::mem::take(&mut first));
                    }
                    read.extend_from_slice(&data);
                }
            }
            Ok((if read.is_empty() { first } else { read.freeze() }, held))
        };
        let (bytes, held) = tokio::time::timeout(deadline, reading)
            .await
            .map_err(|_| Error::BodyTimeout(deadline))??;
        Ok((bytes, prepaid.unwrap_or(Held(held.map(Arc::new)))))
    }

    async fn acquire(&self, units: u32) -> Result<OwnedSemaphorePermit> {
        let room = self.room.clone();
        if let Ok(permit) = room.clone().try_acquire_many_owned(units) {
            return Ok(permit);
        }
        match tokio::time::timeout(WAIT_FOR_ROOM, room.acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::Overloaded(self.bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(length: usize) -> HeaderMap {
        [(http::header::CONTENT_LENGTH, length.to_string().parse().unwrap())]
            .into_iter()
            .collect()
    }

    #[tokio::test]
    async fn bodies_wait_for_room_and_are_refused_past_the_wait() {
        let budget = Arc::new(BodyBudget::new(8 * UNIT));
        let body = |n: usize| crate::body::full(vec![b'x'; n]);
        let deadline = Duration::from_secs(30);
        let (first, held) = budget
            .read(&headers(6 * UNIT), body(6 * UNIT), 1 << 20, deadline, None)
            .await
            .unwrap();
        assert_eq!(first.len(), 6 * UNIT);
        assert_eq!(held.bytes(), 6 * UNIT);
        // Room for 2 more units only: a 4-unit body cannot get in while the
        // first is held...
        tokio::time::pause();
        let refused = budget
            .read(&headers(4 * UNIT), body(4 * UNIT), 1 << 20, deadline, None)
            .await;
        assert!(matches!(refused, Err(Error::Overloaded(_))), "{refused:?}");
        tokio::time::resume();
        // ...and gets in once the first is released while it waits.
        let reader = budget.clone();
        let task = tokio::spawn(async move {
            reader
                .read(&headers(4 * UNIT), body(4 * UNIT), 1 << 20, deadline, None)
                .await
        });
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "no room yet");
        drop(held);
        let (second, second_held) = task.await.unwrap().unwrap();
        assert_eq!(second.len(), 4 * UNIT);
        // A body already paid for (read by the peer listener) costs nothing
        // more: 6 units fit although only 4 are free.
        let prepaid = Held(Some(Arc::new(
            budget.room.clone().try_acquire_many_owned(2).unwrap(),
        )));
        let (again, kept) = budget
            .read(
                &headers(6 * UNIT),
                body(6 * UNIT),
                1 << 20,
                deadline,
                Some(prepaid),
            )
            .await
            .unwrap();
        assert_eq!(again.len(), 6 * UNIT);
        assert_eq!(kept.bytes(), 2 * UNIT, "the prepaid room, nothing added");
        assert_eq!(budget.room.available_permits(), 2);
        drop(second_held);
        assert!(matches!(
            budget.read(&headers(10), body(10), 5, deadline, None).await,
            Err(Error::PayloadTooLarge(5))
        ));
    }
}
