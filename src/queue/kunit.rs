// SPDX-License-Identifier: GPL-2.0

//! KUnit tests of the queue core's state machine, run when the module is loaded.
//!
//! They drive a [`Queue`] with a test driver that keeps the buffers it is given and completes
//! them when told to, so every transition is observable without a device.

use super::*;
use crate::fence::{Fence, FenceAllocation, FenceContext, OutFence};
use kernel::sync::atomic::{
    Atomic,
    Relaxed, //
};

#[kunit_tests(rvb2_queue)]
mod tests {
    use super::*;

    const SIZE: u32 = 8192;
    const OWNER: FileId = FileId(1);
    const OTHER: FileId = FileId(2);

    /// A driver that holds the buffers it gets, oldest first.
    #[pin_data]
    struct TestOps {
        #[pin]
        held: Mutex<KVec<ActiveBuffer<TestOps>>>,
        #[pin]
        starts: Mutex<u32>,
        fail_start: Atomic<bool>,
        /// The fence bound, in ms (long unless a case shortens it).
        timeout_ms: Atomic<u32>,
    }

    impl QueueOps for TestOps {
        // The test suite's log scanner accepts this queue's warnings (it misbehaves on
        // purpose): keep the name in step with `ALLOWED_ANYWHERE` in tools/tests/src/kernlog.rs.
        const NAME: &'static str = "kunit-test-queue";
        const MIN_QUEUED_BUFFERS: u32 = 2;

        fn buffer_size(&self) -> u32 {
            SIZE
        }

        fn buf_queue(&self, buf: ActiveBuffer<Self>) {
            // On a signalling path: no allocation (room for every buffer is reserved, and the
            // driver never holds two tokens of one buffer).
            if let Err(e) = self.held.lock().push_within_capacity(buf) {
                e.0.fail();
            }
        }

        fn start_streaming(&self, _count: u32) -> Result {
            if self.fail_start.load(Relaxed) {
                let mut held = self.held.lock();
                while let Some(b) = held.pop() {
                    b.requeue();
                }
                return Err(EIO);
            }
            *self.starts.lock() += 1;
            Ok(())
        }

        fn stop_streaming(&self) {
            let mut held = self.held.lock();
            while let Some(b) = held.pop() {
                b.fail();
            }
        }

        fn fence_timeout_ms(&self) -> u32 {
            self.timeout_ms.load(Relaxed)
        }
    }

    /// A test's queue. Dropping it stops the queue's fence work, as a driver does when its
    /// device goes away: no work of the queue may still run once the test returned (the module
    /// can be unloaded right after its suite ran).
    struct TestQueue(Arc<Queue<TestOps>>);

    impl core::ops::Deref for TestQueue {
        type Target = Arc<Queue<TestOps>>;

        fn deref(&self) -> &Self::Target {
            &self.0
        }
    }

    impl Drop for TestQueue {
        fn drop(&mut self) {
            // `shutdown()` waits for the driver's tokens: a case that ends with buffers in the
            // test driver gives them back first.
            loop {
                let buf = self.0.ops().held.lock().pop();
                let Some(buf) = buf else {
                    break;
                };
                buf.fail();
            }
            Queue::shutdown(&self.0);
        }
    }

    fn new_queue() -> Result<TestQueue> {
        new_queue_of(Direction::Capture)
    }

    fn new_queue_of(direction: Direction) -> Result<TestQueue> {
        Ok(TestQueue(Queue::new(
            direction,
            None,
            try_pin_init!(TestOps {
                held <- new_mutex!(KVec::with_capacity(MAX_BUFFERS, GFP_KERNEL)?),
                starts <- new_mutex!(0),
                fail_start: Atomic::new(false),
                timeout_ms: Atomic::new(60_000),
            }),
        )?))
    }

    /// The indices the driver holds, oldest first.
    fn held(q: &Queue<TestOps>) -> KVec<u32> {
        // Allocated before taking `held`, which the signalling paths take.
        let mut v = KVec::with_capacity(MAX_BUFFERS, GFP_KERNEL).unwrap_or_default();
        for b in q.ops().held.lock().iter() {
            let _ = v.push_within_capacity(b.index());
        }
        v
    }

    /// The driver completes its oldest buffer, writing into it.
    fn complete_oldest(q: &Queue<TestOps>, fail: bool) -> Option<u32> {
        let mut held = q.ops().held.lock();
        if held.is_empty() {
            return None;
        }
        let mut b = held.remove(0).ok()?;
        drop(held);
        let index = b.index();
        if let Some(mut mem) = b.memory() {
            let _ = mem.write(0, &[index as u8]);
        }
        if fail {
            b.fail();
        } else {
            b.done(SIZE);
        }
        Some(index)
    }

    /// No fences.
    fn none() -> QbufFences<fn(&OutFence) -> Result<()>> {
        QbufFences {
            in_fence: None,
            publish: None,
        }
    }

    fn qbuf(q: &Arc<Queue<TestOps>>, index: u32) -> Result<BufferInfo> {
        Ok(Queue::qbuf(q, OWNER, index, MemArg::Mmap, none())?.0)
    }

    #[test]
    fn qbuf_order_reaches_driver_and_dqbuf() -> Result {
        let q = new_queue()?;
        assert_eq!(q.reqbufs(OWNER, Memory::Mmap, 4)?, 4);
        assert_eq!(qbuf(&q, 2)?.state, BufState::Queued);
        qbuf(&q, 0)?;
        // Not streaming: nothing reaches the driver.
        assert_eq!(held(&q).len(), 0);
        Queue::streamon(&q, OWNER)?;
        assert_eq!(*q.ops().starts.lock(), 1);
        qbuf(&q, 3)?;
        qbuf(&q, 1)?;
        assert_eq!(&held(&q)[..], &[2, 0, 3, 1]);
        for expected in [2, 0, 3, 1] {
            assert_eq!(complete_oldest(&q, false), Some(expected));
        }
        for (seq, expected) in [2u32, 0, 3, 1].into_iter().enumerate() {
            let info = q.dqbuf(OWNER, true)?;
            assert_eq!(info.index, expected);
            assert_eq!(info.state, BufState::Done);
            assert_eq!(info.sequence, seq as u32);
            assert_eq!(info.bytesused, SIZE);
            assert_eq!(q.querybuf(expected)?.state, BufState::Dequeued);
        }
        assert_eq!(q.dqbuf(OWNER, true).err(), Some(EAGAIN));
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn start_waits_for_min_queued_buffers() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        Queue::streamon(&q, OWNER)?;
        assert_eq!(*q.ops().starts.lock(), 0);
        qbuf(&q, 0)?;
        assert_eq!(*q.ops().starts.lock(), 0);
        assert_eq!(held(&q).len(), 0);
        qbuf(&q, 1)?;
        assert_eq!(*q.ops().starts.lock(), 1);
        assert_eq!(&held(&q)[..], &[0, 1]);
        q.streamoff(OWNER)?;
        assert_eq!(held(&q).len(), 0);
        Ok(())
    }

    #[test]
    fn invalid_operations_fail() -> Result {
        let q = new_queue()?;
        assert_eq!(q.dqbuf(OWNER, true).err(), Some(EINVAL));
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        assert_eq!(qbuf(&q, 4).err(), Some(EINVAL));
        assert_eq!(qbuf(&q, 40).err(), Some(EINVAL));
        qbuf(&q, 0)?;
        assert_eq!(qbuf(&q, 0).err(), Some(EINVAL));
        assert_eq!(q.prepare_buf(OWNER, 0, MemArg::Mmap).err(), Some(EINVAL));
        assert_eq!(q.prepare_buf(OWNER, 1, MemArg::Mmap)?.prepared, true);
        assert_eq!(q.prepare_buf(OWNER, 1, MemArg::Mmap).err(), Some(EINVAL));
        // Only the owner may use the queue.
        assert_eq!(q.reqbufs(OTHER, Memory::Mmap, 2).err(), Some(EBUSY));
        assert_eq!(
            Queue::qbuf(&q, OTHER, 2, MemArg::Mmap, none()).err(),
            Some(EBUSY)
        );
        assert_eq!(Queue::streamon(&q, OTHER).err(), Some(EBUSY));
        // DQBUF before STREAMON.
        assert_eq!(q.dqbuf(OWNER, true).err(), Some(EINVAL));
        Queue::streamon(&q, OWNER)?;
        assert_eq!(q.reqbufs(OWNER, Memory::Mmap, 0).err(), Some(EBUSY));
        q.streamoff(OWNER)?;
        assert_eq!(q.reqbufs(OWNER, Memory::Mmap, 0)?, 0);
        // The queue is free again.
        assert_eq!(q.reqbufs(OTHER, Memory::Mmap, 2)?, 3);
        Ok(())
    }

    #[test]
    fn failed_start_keeps_buffers_queued() -> Result {
        let q = new_queue()?;
        q.ops().fail_start.store(true, Relaxed);
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        qbuf(&q, 0)?;
        qbuf(&q, 1)?;
        assert_eq!(Queue::streamon(&q, OWNER).err(), Some(EIO));
        assert_eq!(q.querybuf(0)?.state, BufState::Queued);
        assert_eq!(q.querybuf(1)?.state, BufState::Queued);
        // Not streaming after the failure.
        assert_eq!(q.dqbuf(OWNER, true).err(), Some(EINVAL));
        q.ops().fail_start.store(false, Relaxed);
        Queue::streamon(&q, OWNER)?;
        assert_eq!(&held(&q)[..], &[0, 1]);
        q.streamoff(OWNER)?;
        assert_eq!(q.querybuf(0)?.state, BufState::Dequeued);
        Ok(())
    }

    #[test]
    fn errors_and_streamoff_reclaim() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        for i in 0..3 {
            qbuf(&q, i)?;
        }
        Queue::streamon(&q, OWNER)?;
        assert_eq!(complete_oldest(&q, true), Some(0));
        let info = q.dqbuf(OWNER, true)?;
        assert_eq!((info.index, info.state), (0, BufState::Error));
        // STREAMOFF takes back what the driver and the done list hold.
        assert_eq!(complete_oldest(&q, false), Some(1));
        q.streamoff(OWNER)?;
        for i in 0..3 {
            assert_eq!(q.querybuf(i)?.state, BufState::Dequeued);
        }
        assert_eq!(q.dqbuf(OWNER, true).err(), Some(EINVAL));
        // A new stream starts its sequence again.
        qbuf(&q, 2)?;
        qbuf(&q, 1)?;
        Queue::streamon(&q, OWNER)?;
        assert_eq!(complete_oldest(&q, false), Some(2));
        assert_eq!(q.dqbuf(OWNER, true)?.sequence, 0);
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn stale_buffer_cannot_complete_a_later_use() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        qbuf(&q, 0)?;
        qbuf(&q, 1)?;
        Queue::streamon(&q, OWNER)?;
        // A driver that keeps a buffer past stop_streaming.
        let kept = q.ops().held.lock().remove(0).map_err(|_| EINVAL)?;
        q.streamoff(OWNER)?;
        qbuf(&q, 0)?;
        kept.done(SIZE);
        assert_eq!(q.querybuf(0)?.state, BufState::Queued);
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn remove_bufs_and_create_bufs_reuse_slots() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        assert_eq!(q.remove_bufs(OWNER, 1, 0), Ok(()));
        q.remove_bufs(OWNER, 1, 2)?;
        assert_eq!(q.querybuf(1).err(), Some(EINVAL));
        assert_eq!(q.querybuf(2).err(), Some(EINVAL));
        assert_eq!(q.num_buffers(), 2);
        assert_eq!(q.remove_bufs(OWNER, 1, 1).err(), Some(EINVAL));
        assert_eq!(q.remove_bufs(OWNER, 31, 2).err(), Some(EINVAL));
        qbuf(&q, 3)?;
        assert_eq!(q.remove_bufs(OWNER, 3, 1).err(), Some(EBUSY));
        assert_eq!(
            q.create_bufs(OWNER, Memory::Mmap, 1, SIZE - 1).err(),
            Some(EINVAL)
        );
        assert_eq!(q.create_bufs(OWNER, Memory::Mmap, 2, SIZE * 2)?, (1, 2));
        assert_eq!(q.querybuf(2)?.length, SIZE * 2);
        assert_eq!(
            q.create_bufs(OTHER, Memory::Mmap, 1, SIZE).err(),
            Some(EBUSY)
        );
        q.release(OWNER);
        assert_eq!(q.num_buffers(), 0);
        Ok(())
    }

    /// Waits (up to 2 s) for `cond`, which the fence work makes true.
    fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if cond() {
                return true;
            }
            kernel::time::delay::fsleep(kernel::time::Delta::from_millis(10));
        }
        cond()
    }

    /// A fence of another producer, on a context of its own.
    fn producer() -> Result<OutFence> {
        Ok(FenceContext::new().new_fence(FenceAllocation::new()?))
    }

    /// QBUF with an in-fence and, if `out`, an out-fence (returned).
    fn qbuf_fenced(
        q: &Arc<Queue<TestOps>>,
        index: u32,
        in_fence: Option<ARef<Fence>>,
        out: bool,
    ) -> Result<Option<ARef<Fence>>> {
        let publish = |o: &OutFence| -> Result<ARef<Fence>> { Ok(o.fence().into()) };
        let fences = QbufFences {
            in_fence,
            publish: out.then_some(publish),
        };
        Ok(Queue::qbuf(q, OWNER, index, MemArg::Mmap, fences)?.1)
    }

    #[test]
    fn in_fence_holds_back_later_buffers() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        let producer = producer()?;
        qbuf_fenced(&q, 0, Some(producer.fence().into()), false)?;
        qbuf(&q, 1)?;
        qbuf(&q, 2)?;
        Queue::streamon(&q, OWNER)?;
        // Buffer 0 waits for its fence, and 1 and 2 wait behind it.
        assert_eq!(*q.ops().starts.lock(), 0);
        assert_eq!(held(&q).len(), 0);
        assert!(q.querybuf(0)?.in_fence_pending);
        producer.signal(None);
        // The fence work hands the buffers over, then calls start_streaming().
        assert!(wait_for(
            || held(&q).len() == 3 && *q.ops().starts.lock() == 1
        ));
        assert_eq!(&held(&q)[..], &[0, 1, 2]);
        assert!(!q.querybuf(0)?.in_fence_pending);
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn failed_in_fence_completes_in_order_with_error() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        let producer = producer()?;
        qbuf(&q, 0)?;
        let out1 = qbuf_fenced(&q, 1, Some(producer.fence().into()), true)?.ok_or(EINVAL)?;
        qbuf(&q, 2)?;
        Queue::streamon(&q, OWNER)?;
        // Only one buffer is ready at the head: not enough to start.
        assert_eq!(held(&q).len(), 0);
        producer.signal(Some(EIO));
        // 1 never reaches the driver; 0 and 2 do, and streaming starts.
        assert!(wait_for(|| held(&q).len() == 2));
        assert_eq!(&held(&q)[..], &[0, 2]);
        // 1 waits for 0 to complete, so that DQBUF order and out-fence order are kept.
        assert_eq!(out1.status(), 0);
        assert_eq!(q.dqbuf(OWNER, true).err(), Some(EAGAIN));
        assert_eq!(complete_oldest(&q, false), Some(0));
        assert_eq!(out1.status(), EIO.to_errno());
        assert_eq!(complete_oldest(&q, false), Some(2));
        let order = [
            (0, BufState::Done),
            (1, BufState::Error),
            (2, BufState::Done),
        ];
        for (seq, (index, state)) in order.into_iter().enumerate() {
            let info = q.dqbuf(OWNER, true)?;
            assert_eq!(
                (info.index, info.state, info.sequence),
                (index, state, seq as u32)
            );
        }
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn out_fences_signal_in_order_on_one_context() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        let mut outs = KVec::new();
        for i in 0..3 {
            outs.push(qbuf_fenced(&q, i, None, true)?.ok_or(EINVAL)?, GFP_KERNEL)?;
        }
        assert_eq!(outs[0].context(), outs[2].context());
        assert!(outs[0].seqno() < outs[1].seqno() && outs[1].seqno() < outs[2].seqno());
        assert!(q.querybuf(0)?.out_fence_pending && q.querybuf(0)?.fenced);
        Queue::streamon(&q, OWNER)?;
        assert_eq!(outs[0].status(), 0);
        assert_eq!(complete_oldest(&q, false), Some(0));
        assert_eq!(complete_oldest(&q, true), Some(1));
        assert_eq!((outs[0].status(), outs[1].status()), (1, EIO.to_errno()));
        assert_eq!(outs[2].status(), 0);
        // STREAMOFF: the driver gives back what it holds, with an error.
        q.streamoff(OWNER)?;
        assert_eq!(outs[2].status(), EIO.to_errno());
        // A new allocation gets a new context.
        q.reqbufs(OWNER, Memory::Mmap, 0)?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        let next = qbuf_fenced(&q, 0, None, true)?.ok_or(EINVAL)?;
        assert!(next.context() != outs[0].context());
        q.release(OWNER);
        assert!(next.status() < 0);
        Ok(())
    }

    #[test]
    fn failing_qbuf_leaves_no_fence_and_no_state() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        let failing = |_: &OutFence| -> Result<()> { Err(ENOMEM) };
        let fences = QbufFences {
            in_fence: None,
            publish: Some(failing),
        };
        assert_eq!(
            Queue::qbuf(&q, OWNER, 0, MemArg::Mmap, fences).err(),
            Some(ENOMEM)
        );
        let info = q.querybuf(0)?;
        assert_eq!(
            (info.state, info.fenced, info.out_fence_pending),
            (BufState::Dequeued, false, false)
        );
        // A failed start_streaming() from QBUF takes the buffer and its out-fence back.
        Queue::streamon(&q, OWNER)?;
        q.ops().fail_start.store(true, Relaxed);
        let out0 = qbuf_fenced(&q, 0, None, true)?.ok_or(EINVAL)?;
        assert_eq!(qbuf_fenced(&q, 1, None, true).err(), Some(EIO));
        assert_eq!(q.querybuf(1)?.state, BufState::Dequeued);
        assert_eq!(out0.status(), 0);
        q.ops().fail_start.store(false, Relaxed);
        q.streamoff(OWNER)?;
        assert!(out0.status() < 0);
        Ok(())
    }

    #[test]
    fn never_signalled_in_fence_is_cancelled() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        let producer = producer()?;
        let out = qbuf_fenced(&q, 0, Some(producer.fence().into()), true)?.ok_or(EINVAL)?;
        Queue::streamon(&q, OWNER)?;
        q.release(OWNER);
        assert_eq!(out.status(), crate::errno::ecanceled().to_errno());
        // Signalling the in-fence now reaches nothing.
        producer.signal(None);
        assert_eq!(q.num_buffers(), 0);
        Ok(())
    }

    #[test]
    fn start_failure_from_the_fence_path_errors_the_buffers() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        let producer = producer()?;
        let out0 = qbuf_fenced(&q, 0, Some(producer.fence().into()), true)?.ok_or(EINVAL)?;
        let out1 = qbuf_fenced(&q, 1, None, true)?.ok_or(EINVAL)?;
        Queue::streamon(&q, OWNER)?;
        q.ops().fail_start.store(true, Relaxed);
        // The fence work tries to start streaming; nobody can be told it failed, so the
        // buffers come back with an error, in order.
        producer.signal(None);
        assert!(wait_for(|| out1.status() != 0));
        assert_eq!(
            (out0.status(), out1.status()),
            (EIO.to_errno(), EIO.to_errno())
        );
        for index in [0, 1] {
            let info = q.dqbuf(OWNER, true)?;
            assert_eq!((info.index, info.state), (index, BufState::Error));
        }
        // Still streaming: the next buffers start it.
        q.ops().fail_start.store(false, Relaxed);
        qbuf(&q, 0)?;
        qbuf(&q, 1)?;
        assert_eq!(*q.ops().starts.lock(), 1);
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn ordered_out_fences_wait_for_earlier_buffers() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        let out0 = qbuf_fenced(&q, 0, None, true)?.ok_or(EINVAL)?;
        let out1 = qbuf_fenced(&q, 1, None, true)?.ok_or(EINVAL)?;
        Queue::streamon(&q, OWNER)?;
        // The driver completes buffer 1 first: its out-fence waits for buffer 0's.
        let b1 = q.ops().held.lock().remove(1).map_err(|_| EINVAL)?;
        b1.done(SIZE);
        assert_eq!((out0.status(), out1.status()), (0, 0));
        assert_eq!(complete_oldest(&q, false), Some(0));
        assert_eq!((out0.status(), out1.status()), (1, 1));
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn last_buffer_ends_dqbuf_until_streamoff() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        for i in 0..3 {
            qbuf(&q, i)?;
        }
        Queue::streamon(&q, OWNER)?;
        let b0 = q.ops().held.lock().remove(0).map_err(|_| EINVAL)?;
        b0.done_last(SIZE);
        let info = q.dqbuf(OWNER, true)?;
        assert_eq!((info.index, info.last), (0, true));
        // Nothing more comes, even with buffers done behind it.
        assert_eq!(complete_oldest(&q, false), Some(1));
        assert_eq!(q.dqbuf(OWNER, true).err(), Some(EPIPE));
        assert_eq!(q.dqbuf(OWNER, false).err(), Some(EPIPE));
        q.streamoff(OWNER)?;
        qbuf(&q, 0)?;
        qbuf(&q, 1)?;
        Queue::streamon(&q, OWNER)?;
        assert_eq!(complete_oldest(&q, false), Some(0));
        assert_eq!(q.dqbuf(OWNER, true)?.last, false);
        q.streamoff(OWNER)?;
        Ok(())
    }

    /// The driver's oldest buffer, taken from it.
    fn take_oldest(q: &Queue<TestOps>) -> Result<ActiveBuffer<TestOps>> {
        q.ops().held.lock().remove(0).map_err(|_| EINVAL)
    }

    #[test]
    fn cpu_access_is_bounded_and_exclusive() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 2)?;
        qbuf(&q, 0)?;
        qbuf(&q, 1)?;
        Queue::streamon(&q, OWNER)?;
        let mut b = take_oldest(&q)?;
        let other = q.lock.lock().bufs[0].as_ref().and_then(|b| b.mem.clone());
        let other = other.ok_or(EINVAL)?;
        {
            let mut mem = b.memory().ok_or(EINVAL)?;
            assert_eq!(mem.size(), SIZE as usize);
            // Only one access to a buffer's memory at a time.
            assert!(other.cpu_access(SIZE as usize).is_none());
            mem.fill(0, 16, 0xaa)?;
            mem.write(4, &[1, 2, 3])?;
            mem.copy_within(3, 7, 4)?;
            let mut back = [0u8; 12];
            mem.read(0, &mut back)?;
            assert_eq!(back, [0xaa, 0xaa, 0xaa, 0xaa, 1, 2, 3, 0xaa, 1, 2, 3, 0xaa]);
            // Out of range: nothing written.
            assert_eq!(mem.write(SIZE as usize - 1, &[0, 0]).err(), Some(ERANGE));
            assert_eq!(mem.fill(usize::MAX, 2, 0).err(), Some(ERANGE));
            assert_eq!(mem.copy_within(0, SIZE as usize, 1).err(), Some(ERANGE));
            mem.read(SIZE as usize - 2, &mut back[..2])?;
            assert_eq!(back[..2], [0, 0]);
        }
        assert!(other.cpu_access(SIZE as usize).is_some());
        b.done(SIZE);
        q.streamoff(OWNER)?;
        // A stale token gets no access.
        qbuf(&q, 0)?;
        qbuf(&q, 1)?;
        Queue::streamon(&q, OWNER)?;
        let mut b = take_oldest(&q)?;
        q.streamoff(OWNER)?;
        assert!(b.memory().is_none());
        b.fail();
        Ok(())
    }

    #[test]
    fn content_tag_only_for_memory_nobody_else_writes() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 2)?;
        let mem = |i: usize| {
            let m = q.lock.lock().bufs[i].as_ref().and_then(|b| b.mem.clone());
            m.ok_or(EINVAL)
        };
        let tag = |m: &BufferMem| m.cpu_access(SIZE as usize).map(|a| a.content());
        let set = |m: &BufferMem, t: u64| -> Result {
            m.cpu_access(SIZE as usize)
                .ok_or(EBUSY)?
                .set_content(Some(t));
            Ok(())
        };
        let (m0, m1) = (mem(0)?, mem(1)?);
        // New memory holds nothing known; a tag recorded stays until the next.
        assert_eq!(tag(&m0), Some(None));
        set(&m0, 7)?;
        set(&m1, 9)?;
        assert_eq!((tag(&m0), tag(&m1)), (Some(Some(7)), Some(Some(9))));
        m0.cpu_access(SIZE as usize).ok_or(EBUSY)?.set_content(None);
        assert_eq!(tag(&m0), Some(None));
        set(&m0, 7)?;
        // Exported (O_RDWR), the memory may be written by importers: no tag from now on, even
        // once the dma-buf is gone.
        drop(q.expbuf(OWNER, 1, 2)?);
        assert_eq!(tag(&m1), Some(None));
        set(&m1, 10)?;
        assert_eq!((tag(&m0), tag(&m1)), (Some(Some(7)), Some(None)));
        Ok(())
    }

    #[test]
    fn driver_sets_sequence_and_timestamp() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        for i in 0..4 {
            qbuf(&q, i)?;
        }
        Queue::streamon(&q, OWNER)?;
        // Frames 0..=4 had no buffer: the driver numbers this one 5, with its frame's time.
        let mut b = take_oldest(&q)?;
        b.set_sequence(5);
        b.set_timestamp_ns(1_000_000_123);
        b.done(SIZE);
        let info = q.dqbuf(OWNER, true)?;
        assert_eq!(
            (info.index, info.sequence, info.timestamp_ns),
            (0, 5, 1_000_000_123)
        );
        // A failed buffer carries what the driver gave it too.
        let mut b = take_oldest(&q)?;
        b.set_sequence(9);
        b.set_timestamp_ns(2_000_000_000);
        b.fail();
        let info = q.dqbuf(OWNER, true)?;
        assert_eq!(
            (info.index, info.state, info.sequence, info.timestamp_ns),
            (1, BufState::Error, 9, 2_000_000_000)
        );
        // What the driver does not set, the core fills in: its counter continues after the
        // driver's last number, and the time of completion.
        let before = crate::time::monotonic_ns();
        assert_eq!(complete_oldest(&q, false), Some(2));
        let info = q.dqbuf(OWNER, true)?;
        assert_eq!((info.index, info.sequence), (2, 10));
        assert!(info.timestamp_ns >= before && info.timestamp_ns <= crate::time::monotonic_ns());
        q.streamoff(OWNER)?;
        Ok(())
    }

    /// `-ETIMEDOUT`, the error of out-fences whose buffer the deadline failed.
    fn etimedout() -> i32 {
        ETIMEDOUT.to_errno()
    }

    #[test]
    fn deadline_fails_a_buffer_never_streamed() -> Result {
        let q = new_queue()?;
        q.ops().timeout_ms.store(50, Relaxed);
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        let out0 = qbuf_fenced(&q, 0, None, true)?.ok_or(EINVAL)?;
        // Unfenced buffers have no deadline.
        qbuf(&q, 1)?;
        assert!(wait_for(|| out0.status() != 0));
        assert_eq!(out0.status(), etimedout());
        let info = q.querybuf(0)?;
        assert_eq!(
            (info.state, info.out_fence_pending),
            (BufState::Error, false)
        );
        assert_eq!(q.querybuf(1)?.state, BufState::Queued);
        // Returned by DQBUF once streaming, first.
        Queue::streamon(&q, OWNER)?;
        assert_eq!(q.dqbuf(OWNER, true)?.state, BufState::Error);
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn deadline_fails_a_never_signalled_in_fence() -> Result {
        let q = new_queue()?;
        q.ops().timeout_ms.store(50, Relaxed);
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        let producer = producer()?;
        let out0 = qbuf_fenced(&q, 0, Some(producer.fence().into()), true)?.ok_or(EINVAL)?;
        qbuf(&q, 1)?;
        qbuf(&q, 2)?;
        Queue::streamon(&q, OWNER)?;
        assert!(wait_for(|| out0.status() != 0));
        assert_eq!(out0.status(), etimedout());
        // The buffers behind it go to the driver: two are ready, streaming starts.
        assert!(wait_for(|| held(&q).len() == 2));
        assert_eq!(&held(&q)[..], &[1, 2]);
        assert!(!q.querybuf(0)?.in_fence_pending);
        // The late signal reaches nothing.
        producer.signal(None);
        assert_eq!(q.dqbuf(OWNER, true)?.index, 0);
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn deadline_takes_buffers_back_from_the_driver() -> Result {
        let q = new_queue()?;
        q.ops().timeout_ms.store(50, Relaxed);
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        let out0 = qbuf_fenced(&q, 0, None, true)?.ok_or(EINVAL)?;
        let out1 = qbuf_fenced(&q, 1, None, true)?.ok_or(EINVAL)?;
        Queue::streamon(&q, OWNER)?;
        assert_eq!(&held(&q)[..], &[0, 1]);
        assert!(wait_for(|| out1.status() != 0));
        assert_eq!((out0.status(), out1.status()), (etimedout(), etimedout()));
        // The driver's tokens are stale: they write and complete nothing.
        assert!(q.ops().held.lock().iter().all(|b| b.taken_back()));
        for index in [0, 1] {
            let info = q.dqbuf(OWNER, true)?;
            assert_eq!((info.index, info.state), (index, BufState::Error));
        }
        // Queued again, buffer 0 waits until the driver gave its stale token back, and buffer 2
        // waits behind it.
        q.ops().timeout_ms.store(60_000, Relaxed);
        qbuf(&q, 0)?;
        qbuf(&q, 2)?;
        assert_eq!(&held(&q)[..], &[0, 1]);
        assert_eq!(complete_oldest(&q, false), Some(0));
        assert!(wait_for(|| held(&q).len() == 3));
        assert_eq!(&held(&q)[..], &[1, 0, 2]);
        assert_eq!(q.dqbuf(OWNER, true).err(), Some(EAGAIN));
        assert_eq!(complete_oldest(&q, false), Some(1));
        assert_eq!(complete_oldest(&q, false), Some(0));
        assert_eq!(q.dqbuf(OWNER, true)?.state, BufState::Done);
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn deadline_keeps_out_fence_order() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        let out0 = qbuf_fenced(&q, 0, None, true)?.ok_or(EINVAL)?;
        let out1 = qbuf_fenced(&q, 1, None, true)?.ok_or(EINVAL)?;
        // A shorter bound for buffer 2 fails buffer 0 (queued before it) as well.
        q.ops().timeout_ms.store(50, Relaxed);
        let out2 = qbuf_fenced(&q, 2, None, true)?.ok_or(EINVAL)?;
        Queue::streamon(&q, OWNER)?;
        // The driver completes buffer 1 before the deadline: its fence waits for buffer 0's.
        let b1 = q.ops().held.lock().remove(1).map_err(|_| EINVAL)?;
        b1.done(SIZE);
        assert_eq!(out1.status(), 0);
        assert!(wait_for(|| out2.status() != 0));
        // Buffer 0 failed, buffer 1 done: the fences signal in QBUF order, each agreeing with
        // its buffer, and DQBUF gives the buffers in that order too (1 came back first, but
        // waited for 0).
        assert_eq!(
            (out0.status(), out1.status(), out2.status()),
            (etimedout(), 1, etimedout())
        );
        let order = [
            (0, BufState::Error),
            (1, BufState::Done),
            (2, BufState::Error),
        ];
        for (index, state) in order {
            let info = q.dqbuf(OWNER, true)?;
            assert_eq!((info.index, info.state), (index, state));
        }
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn querybuf_after_dqbuf_keeps_fields() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        for i in 0..3 {
            qbuf(&q, i)?;
        }
        Queue::streamon(&q, OWNER)?;
        let mut b = take_oldest(&q)?;
        b.set_sequence(3);
        b.set_timestamp_ns(4_000_000_000);
        b.done_last(SIZE - 1);
        let dq = q.dqbuf(OWNER, true)?;
        let qb = q.querybuf(0)?;
        assert_eq!(qb.state, BufState::Dequeued);
        assert_eq!(
            (qb.sequence, qb.timestamp_ns, qb.bytesused, qb.last),
            (dq.sequence, dq.timestamp_ns, dq.bytesused, dq.last)
        );
        assert_eq!(
            (qb.sequence, qb.timestamp_ns, qb.bytesused),
            (3, 4_000_000_000, SIZE - 1)
        );
        assert!(qb.last);
        // STREAMOFF keeps them too.
        q.streamoff(OWNER)?;
        let qb = q.querybuf(0)?;
        assert_eq!(
            (qb.sequence, qb.timestamp_ns, qb.bytesused, qb.last),
            (3, 4_000_000_000, SIZE - 1, true)
        );
        // PREPARE_BUF and QBUF clear them, as in videobuf2.
        let p = q.prepare_buf(OWNER, 0, MemArg::Mmap)?;
        assert_eq!(
            (p.sequence, p.timestamp_ns, p.bytesused, p.last),
            (0, 0, 0, false)
        );
        let qd = qbuf(&q, 0)?;
        assert_eq!(
            (qd.sequence, qd.timestamp_ns, qd.bytesused, qd.last),
            (0, 0, 0, false)
        );
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn self_dependency_is_edeadlk() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        let out0 = qbuf_fenced(&q, 0, None, true)?.ok_or(EINVAL)?;
        Queue::streamon(&q, OWNER)?;
        assert_eq!(
            qbuf_fenced(&q, 1, Some(out0.clone()), true).err(),
            Some(crate::errno::edeadlk())
        );
        let info = q.querybuf(1)?;
        assert_eq!((info.state, info.fenced), (BufState::Dequeued, false));
        // Another queue's fence, or this one's once signalled, is fine.
        let other = producer()?;
        qbuf_fenced(&q, 1, Some(other.fence().into()), false)?;
        q.streamoff(OWNER)?;
        assert!(out0.status() < 0);
        qbuf_fenced(&q, 2, Some(out0), false)?;
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn deadline_covers_an_out_fence_waiting_for_earlier_buffers() -> Result {
        let q = new_queue()?;
        q.ops().timeout_ms.store(50, Relaxed);
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        // Buffer 0 has no fence, hence no deadline of its own.
        qbuf(&q, 0)?;
        let out1 = qbuf_fenced(&q, 1, None, true)?.ok_or(EINVAL)?;
        Queue::streamon(&q, OWNER)?;
        // The driver completes buffer 1 and keeps buffer 0: out-fence 1 waits for buffer 0
        // until buffer 1's deadline fails buffer 0.
        let b1 = q.ops().held.lock().remove(1).map_err(|_| EINVAL)?;
        b1.done(SIZE);
        assert!(wait_for(|| out1.status() != 0));
        assert_eq!(out1.status(), 1);
        assert_eq!(q.querybuf(0)?.state, BufState::Error);
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn ordered_queue_keeps_out_of_order_completion_back() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        let out0 = qbuf_fenced(&q, 0, None, true)?.ok_or(EINVAL)?;
        let out1 = qbuf_fenced(&q, 1, None, true)?.ok_or(EINVAL)?;
        Queue::streamon(&q, OWNER)?;
        // The misbehaving driver completes buffer 1 first: nothing can be dequeued, so no DQBUF
        // can signal its out-fence before buffer 0's.
        let b1 = q.ops().held.lock().remove(1).map_err(|_| EINVAL)?;
        b1.done(SIZE);
        assert_eq!(q.dqbuf(OWNER, true).err(), Some(EAGAIN));
        assert_eq!((out0.status(), out1.status()), (0, 0));
        assert_eq!(complete_oldest(&q, false), Some(0));
        assert_eq!((out0.status(), out1.status()), (1, 1));
        assert_eq!(q.dqbuf(OWNER, true)?.index, 0);
        assert_eq!(q.dqbuf(OWNER, true)?.index, 1);
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn driver_fence_timeout_is_clamped() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 3)?;
        let ms = 1_000_000;
        // Above the maximum: the bound is the maximum.
        q.ops().timeout_ms.store(u32::MAX, Relaxed);
        let before = crate::time::monotonic_ns();
        qbuf_fenced(&q, 0, None, true)?;
        let after = crate::time::monotonic_ns();
        let deadline = q.state.lock().slots[0].deadline_ns.ok_or(EINVAL)?;
        let max = u64::from(FENCE_TIMEOUT_MAX_MS) * ms;
        assert!(deadline >= before + max && deadline <= after + max);
        // Below the minimum (0): the bound is the minimum, and the deadline fails the buffer.
        q.ops().timeout_ms.store(0, Relaxed);
        let before = crate::time::monotonic_ns();
        let out1 = qbuf_fenced(&q, 1, None, true)?.ok_or(EINVAL)?;
        let after = crate::time::monotonic_ns();
        let deadline = q.state.lock().slots[1].deadline_ns.ok_or(EINVAL)?;
        let min = u64::from(FENCE_TIMEOUT_MIN_MS) * ms;
        assert!(deadline >= before + min && deadline <= after + min);
        assert!(wait_for(|| out1.status() != 0));
        assert_eq!(out1.status(), etimedout());
        q.streamoff(OWNER)?;
        Ok(())
    }

    #[test]
    fn stale_token_dropped_in_atomic_context_frees_nothing() -> Result {
        let q = new_queue()?;
        q.reqbufs(OWNER, Memory::Mmap, 4)?;
        qbuf(&q, 0)?;
        qbuf(&q, 1)?;
        Queue::streamon(&q, OWNER)?;
        // The driver keeps buffer 0 past STREAMOFF (the core warns), and userspace frees it: the
        // stale token holds the only other reference on its memory.
        let b0 = take_oldest(&q)?;
        q.streamoff(OWNER)?;
        assert!(b0.taken_back());
        q.remove_bufs(OWNER, 0, 1)?;
        // The token goes in atomic context (interrupts off, a spinlock held), as from a timer.
        // Freeing the memory here (`vfree()`) would be a sleeping call, which
        // `CONFIG_DEBUG_ATOMIC_SLEEP` reports; the queue takes the reference instead.
        let atomic = KBox::pin_init(new_irq_spinlock!((), c"rvb2_kunit_atomic"), GFP_KERNEL)?;
        {
            let _atomic = atomic.lock();
            assert!(crate::sync::irqs_disabled());
            drop(b0);
        }
        // The fence work drops it, in process context.
        assert!(wait_for(|| q.state.lock().slots[0].parked.is_none()));
        Ok(())
    }

    #[test]
    fn fence_waiter_cannot_be_misused() -> Result {
        let q = new_queue()?;
        let waiter = KBox::pin_init(FenceWaiter::<Queue<TestOps>>::new(), GFP_KERNEL)?;
        let a = producer()?;
        let b = producer()?;
        // Unregistering a waiter that was never registered does nothing.
        waiter.unregister();
        assert_eq!(waiter.register(a.fence(), &q), Ok(true));
        // A second registration, on any fence, is refused while the first stands.
        assert_eq!(waiter.register(b.fence(), &q), Err(EBUSY));
        assert_eq!(waiter.register(a.fence(), &q), Err(EBUSY));
        // Unregistering takes the callback off the fence it was registered on.
        waiter.unregister();
        waiter.unregister();
        assert_eq!(waiter.register(b.fence(), &q), Ok(true));
        // Dropped while registered: the callback goes with it, and signalling the fence
        // afterwards reaches no freed memory (KASAN would report it).
        drop(waiter);
        b.signal(None);
        // An already signalled fence registers nothing.
        let waiter = KBox::pin_init(FenceWaiter::<Queue<TestOps>>::new(), GFP_KERNEL)?;
        let c = producer()?;
        let fence: ARef<Fence> = c.fence().into();
        c.signal(None);
        assert_eq!(waiter.register(&fence, &q), Ok(false));
        drop(a);
        Ok(())
    }

    #[test]
    fn irq_spinlock_guards_drop_in_any_order() -> Result {
        let a = KBox::pin_init(new_irq_spinlock!(0u32, c"rvb2_kunit_a"), GFP_KERNEL)?;
        let b = KBox::pin_init(new_irq_spinlock!(0u32, c"rvb2_kunit_b"), GFP_KERNEL)?;
        let irqs_before = crate::sync::irqs_disabled();
        assert!(!irqs_before);
        let ga = a.lock();
        let gb = b.lock();
        // The first guard goes first: interrupts stay disabled while `b` is held.
        drop(ga);
        assert!(crate::sync::irqs_disabled());
        drop(gb);
        assert_eq!(crate::sync::irqs_disabled(), irqs_before);
        // And in the usual order.
        let ga = a.lock();
        let gb = b.lock();
        drop(gb);
        assert!(crate::sync::irqs_disabled());
        drop(ga);
        assert!(!crate::sync::irqs_disabled());
        // `try_lock` counts the same way.
        let ga = a.try_lock().ok_or(EBUSY)?;
        let gb = b.lock();
        drop(ga);
        assert!(crate::sync::irqs_disabled());
        drop(gb);
        assert!(!crate::sync::irqs_disabled());
        Ok(())
    }

    #[test]
    fn file_ids_are_distinct() -> Result {
        let (a, b) = (FileId::new(), FileId::new());
        assert_ne!(a, b);
        // A queue owned by one is busy for the other.
        let q = new_queue()?;
        q.reqbufs(a, Memory::Mmap, 2)?;
        assert_eq!(q.reqbufs(b, Memory::Mmap, 2).err(), Some(EBUSY));
        // Once the owner closed, the other may allocate (one more than MIN_QUEUED_BUFFERS).
        q.release(a);
        assert_eq!(q.reqbufs(b, Memory::Mmap, 2)?, 3);
        Ok(())
    }

    #[test]
    fn output_queue_runs_the_same_state_machine() -> Result {
        // The direction is the shim's business (buffer type, timestamp flags): the core moves
        // an output queue's buffers exactly as a capture queue's.
        let q = new_queue_of(Direction::Output)?;
        assert_eq!(q.direction(), Direction::Output);
        q.reqbufs(OWNER, Memory::Mmap, 2)?;
        qbuf(&q, 1)?;
        qbuf(&q, 0)?;
        Queue::streamon(&q, OWNER)?;
        assert_eq!(&held(&q)[..], &[1, 0]);
        assert_eq!(complete_oldest(&q, false), Some(1));
        assert_eq!(q.dqbuf(OWNER, true)?.index, 1);
        q.streamoff(OWNER)?;
        Ok(())
    }
}
