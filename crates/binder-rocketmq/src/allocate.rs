//! Queue allocation for partitioned consumers: an instance consumes the queues of its
//! partitions.
//!
//! A partitioned producer sends partition `p` to queue `p % queues`, and the topic has at least
//! `partition-count` queues, so partition `p` lives in queue `p`. An instance with
//! `instance-count` `n` consumes queue `q` when `q % n` is one of its partitions
//! (`instance-index`, or every entry of `instance-index-list`). The group's retry topic is not
//! partitioned: its queues are shared out as usual (averagely).

use cheetah_string::CheetahString;
use rocketmq_client_rust::{AllocateMessageQueueAveragely, AllocateMessageQueueStrategy};
use rocketmq_model::common::message::message_queue::MessageQueue;

/// Allocates a partitioned consumer the queues of its partitions.
#[derive(Debug, Clone)]
pub(crate) struct PartitionAllocation {
    partitions: Vec<u32>,
    instance_count: u32,
}

impl PartitionAllocation {
    pub(crate) fn new(partitions: Vec<u32>, instance_count: u32) -> Self {
        Self {
            partitions,
            instance_count: instance_count.max(1),
        }
    }

    /// Whether queue `queue_id` belongs to this instance.
    fn owns(&self, queue_id: i32) -> bool {
        u32::try_from(queue_id).is_ok_and(|q| self.partitions.contains(&(q % self.instance_count)))
    }
}

impl AllocateMessageQueueStrategy for PartitionAllocation {
    fn allocate(
        &self,
        consumer_group: &CheetahString,
        current_cid: &CheetahString,
        mq_all: &[MessageQueue],
        cid_all: &[CheetahString],
    ) -> rocketmq_error::Result<Vec<MessageQueue>> {
        if mq_all
            .first()
            .is_some_and(|q| q.topic().as_str().contains("%RETRY%"))
        {
            return AllocateMessageQueueAveragely.allocate(
                consumer_group,
                current_cid,
                mq_all,
                cid_all,
            );
        }
        Ok(mq_all
            .iter()
            .filter(|q| self.owns(q.queue_id()))
            .cloned()
            .collect())
    }

    fn get_name(&self) -> &'static str {
        "PARTITION"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(topic: &str, n: i32) -> Vec<MessageQueue> {
        (0..n)
            .map(|i| MessageQueue::from_parts(topic, "b", i))
            .collect()
    }

    fn ids(v: &[MessageQueue]) -> Vec<i32> {
        v.iter().map(MessageQueue::queue_id).collect()
    }

    #[test]
    fn each_instance_takes_the_queues_of_its_partitions() {
        let all = queues("orders", 4);
        let cids = [CheetahString::from("a"), CheetahString::from("b")];
        let g = CheetahString::from("g");
        let zero = PartitionAllocation::new(vec![0], 2);
        let one = PartitionAllocation::new(vec![1], 2);
        let both = PartitionAllocation::new(vec![0, 1], 2);
        assert_eq!(
            ids(&zero.allocate(&g, &cids[0], &all, &cids).unwrap_or_default()),
            [0, 2]
        );
        assert_eq!(
            ids(&one.allocate(&g, &cids[1], &all, &cids).unwrap_or_default()),
            [1, 3]
        );
        assert_eq!(
            ids(&both.allocate(&g, &cids[0], &all, &cids).unwrap_or_default()),
            [0, 1, 2, 3]
        );
        // One instance: every queue.
        let single = PartitionAllocation::new(vec![0], 1);
        assert_eq!(
            ids(&single
                .allocate(&g, &cids[0], &all, &cids)
                .unwrap_or_default())
            .len(),
            4
        );
    }

    #[test]
    fn the_retry_topic_is_shared_out_averagely() {
        let retry = queues("%RETRY%g", 1);
        let cids = [CheetahString::from("a"), CheetahString::from("b")];
        let g = CheetahString::from("g");
        let one = PartitionAllocation::new(vec![1], 2);
        let got_a = one
            .allocate(&g, &cids[0], &retry, &cids)
            .unwrap_or_default();
        let got_b = one
            .allocate(&g, &cids[1], &retry, &cids)
            .unwrap_or_default();
        assert_eq!(
            got_a.len() + got_b.len(),
            1,
            "exactly one member takes the retry queue"
        );
    }
}
