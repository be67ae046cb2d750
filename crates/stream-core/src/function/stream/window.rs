//! Windows over a stream of messages.

use std::time::Duration;

use futures::Stream;

/// Stream operators for stream functions, in one trait (importing `tokio_stream::StreamExt`
/// beside `futures::StreamExt` makes every `.map` ambiguous).
pub trait MessageStreamExt: Stream + Sized {
    /// Tumbling windows: a `Vec` of up to `max` items, emitted when it is full or `within`
    /// after its first item arrived, and at the end of the stream; never empty. With
    /// [`Message::merge`](crate::Message::merge) the window's aggregate acknowledges every input
    /// when it is sent. A window larger than what the broker hands out at once (a
    /// binder's prefetch or consume threads, see docs/functions.md) fills only by time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use futures::StreamExt;
    /// use stream_core::function::stream::MessageStreamExt;
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let windows: Vec<Vec<i32>> = futures::stream::iter(1..=5)
    ///     .windows(2, Duration::from_secs(1))
    ///     .collect()
    ///     .await;
    /// assert_eq!(windows, vec![vec![1, 2], vec![3, 4], vec![5]]);
    /// # });
    /// ```
    fn windows(self, max: usize, within: Duration) -> tokio_stream::adapters::ChunksTimeout<Self> {
        tokio_stream::StreamExt::chunks_timeout(self, max.max(1), within)
    }
}

impl<S: Stream> MessageStreamExt for S {}
