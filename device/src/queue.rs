//! A bounded first-in first-out queue that makes room by dropping its oldest item. A board that cannot
//! keep up with its camera should assign the newest frames, not fall ever further behind or run out of
//! memory; the same holds for messages waiting for a slow serial line.

use std::collections::VecDeque;

#[derive(Debug)]
pub struct DropOldestQueue<T> {
    items: VecDeque<T>,
    capacity: usize,
    /// Items pushed out by newer ones since the queue was made.
    dropped: u64,
    /// The most items ever held at once: never more than `capacity`.
    high_water: usize,
}

impl<T> DropOldestQueue<T> {
    /// A queue of at most `capacity` items; a capacity of 0 is taken as 1, so the newest item is kept.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        DropOldestQueue { items: VecDeque::with_capacity(capacity), capacity, dropped: 0, high_water: 0 }
    }

    /// Appends `item`; when the queue is full the oldest item is removed first, counted and returned.
    pub fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() == self.capacity {
            self.dropped += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        self.high_water = self.high_water.max(self.items.len());
        dropped
    }

    /// The oldest item.
    pub fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// Removes every item (they are not counted as dropped: the caller decides what they were);
    /// returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
        n
    }

    /// The items, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// Removes the item at `index` (0 is the oldest).
    pub fn remove(&mut self, index: usize) -> Option<T> {
        self.items.remove(index)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items dropped to make room since the queue was made.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The most items the queue has held at once.
    pub fn high_water(&self) -> usize {
        self.high_water
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_its_oldest_item_and_counts_it() {
        let mut queue = DropOldestQueue::new(3);
        for i in 0..3 {
            assert_eq!(queue.push(i), None, "room for {i}");
        }
        assert_eq!(queue.push(3), Some(0), "the oldest makes room");
        assert_eq!(queue.push(4), Some(1));
        assert_eq!((queue.len(), queue.dropped(), queue.high_water()), (3, 2, 3));
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        assert_eq!(order, [2, 3, 4], "the newest three, oldest first");
        assert!(queue.is_empty());
    }

    #[test]
    fn the_queue_never_holds_more_than_its_capacity() {
        let mut queue = DropOldestQueue::new(4);
        for i in 0..1000 {
            queue.push(i);
            assert!(queue.len() <= queue.capacity());
            if i % 7 == 0 {
                queue.pop();
            }
        }
        assert_eq!(queue.high_water(), 4);
        // 1000 pushed, 143 popped (0, 7, … 994), 4 still held: the rest were dropped.
        assert_eq!(queue.dropped(), 1000 - 143 - 4);
    }

    #[test]
    fn clearing_empties_without_counting_drops_and_capacity_zero_keeps_the_newest() {
        let mut queue = DropOldestQueue::new(2);
        queue.push('a');
        queue.push('b');
        assert_eq!(queue.clear(), 2);
        assert_eq!((queue.len(), queue.dropped()), (0, 0));

        let mut newest_only = DropOldestQueue::new(0);
        assert_eq!(newest_only.capacity(), 1);
        newest_only.push('x');
        assert_eq!(newest_only.push('y'), Some('x'));
        assert_eq!(newest_only.pop(), Some('y'));
    }
}
