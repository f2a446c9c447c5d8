//! Which part of a track an IETF subscription delivers: its filter as the
//! relay serves it, and how SUBSCRIBE_UPDATE / REQUEST_UPDATE may change it.
//! Pure: the session asks it which groups and objects to send.
//!
//! A relay serves groups it holds in its group cache and the groups that
//! arrive later. A subscription starts either at the newest cached group
//! (LargestObject / NEXT_OBJECT / no filter, from that group's first object,
//! as qumo always has) or at the first group at or after a given one (the
//! absolute filters, NextGroupStart, RELATIVE_START). It may end at a group
//! (or, on draft 22, an object in it).

use crate::ietf::draft22::LocationFilter;
use crate::ietf::{Filter, Location};

/// Where sending begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum First {
    /// The newest group the relay holds (or the first to arrive).
    Newest,
    /// The first group whose sequence is at least this one, cached or to come.
    From(u64),
}

/// The last location a subscription delivers, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct End {
    pub(super) group: u64,
    /// The last object of `group`; `None` for the whole group.
    pub(super) object: Option<u64>,
}

/// A subscription's filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    /// The Start Location the filter resolved to (what an update may not
    /// move back on draft 14).
    pub(super) start: Location,
    /// Whether objects before `start.object` in `start.group` are skipped:
    /// false for the live filters, which send the newest group whole.
    pub(super) skip_to_start: bool,
    pub(super) end: Option<End>,
}

/// Why a filter cannot be served: the draft's INVALID_RANGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InvalidRange(pub(super) &'static str);

impl Window {
    fn open(start: Location, skip_to_start: bool) -> Self {
        Window {
            start,
            skip_to_start,
            end: None,
        }
    }

    /// A draft-14 filter, given the Largest Object the relay holds.
    /// AbsoluteRange's End Group is read as the draft-14 text has it (the
    /// absolute last group, as aiomoqt writes it; see `docs/IETF.md`).
    pub(super) fn draft14(
        filter: Filter,
        largest: Option<Location>,
    ) -> Result<(Self, First), InvalidRange> {
        let zero = Location {
            group: 0,
            object: 0,
        };
        Ok(match filter {
            Filter::LargestObject => {
                let start = largest.map_or(zero, |l| Location {
                    group: l.group,
                    object: l.object.saturating_add(1),
                });
                (Window::open(start, false), First::Newest)
            }
            Filter::NextGroupStart => Window::after_largest(0, largest),
            Filter::AbsoluteStart(start) => (Window::open(start, true), First::From(start.group)),
            Filter::AbsoluteRange { start, end_group } => {
                let end = End {
                    group: end_group,
                    object: None,
                };
                (Window::range(start, end)?, First::From(start.group))
            }
        })
    }

    /// A draft-22 LOCATION_FILTER, given the Largest Object the relay holds.
    pub(super) fn draft22(
        filter: LocationFilter,
        largest: Option<Location>,
    ) -> Result<(Self, First), InvalidRange> {
        Ok(match filter {
            LocationFilter::None | LocationFilter::NextObject => {
                Window::draft14(Filter::LargestObject, largest)?
            }
            LocationFilter::RelativeStart(groups) => Window::after_largest(groups, largest),
            LocationFilter::AbsoluteStart(start) => {
                (Window::open(start, true), First::From(start.group))
            }
            LocationFilter::AbsoluteGroupEnd { start, end_group } => {
                let end = End {
                    group: end_group,
                    object: None,
                };
                (Window::range(start, end)?, First::From(start.group))
            }
            LocationFilter::AbsoluteRange {
                start,
                end_group,
                end_object,
            } => {
                let end = End {
                    group: end_group,
                    object: Some(end_object),
                };
                (Window::range(start, end)?, First::From(start.group))
            }
        })
    }

    /// From `groups` groups before the one after Largest. With no Largest
    /// known (a replica that has no group yet) the start is {0, 0}, and the
    /// relay starts at the newest group it gets, as it always has, rather
    /// than replay a cache snapshot that arrives after the SUBSCRIBE.
    fn after_largest(groups: u64, largest: Option<Location>) -> (Self, First) {
        let Some(largest) = largest else {
            return (Window::open(Location::default(), true), First::Newest);
        };
        let group = largest.group.saturating_add(1).saturating_sub(groups);
        let start = Location { group, object: 0 };
        (Window::open(start, true), First::From(group))
    }

    fn range(start: Location, end: End) -> Result<Self, InvalidRange> {
        let before = end.group < start.group
            || (end.group == start.group && end.object.is_some_and(|o| o < start.object));
        if before {
            return Err(InvalidRange("the range ends before it starts"));
        }
        Ok(Window {
            start,
            skip_to_start: true,
            end: Some(end),
        })
    }

    /// Whether group `sequence` is sent at all.
    pub(super) fn passes(&self, sequence: u64) -> bool {
        let after_start = !self.skip_to_start || sequence >= self.start.group;
        after_start && self.end.is_none_or(|e| sequence <= e.group)
    }

    /// Whether no group at or after `next` can pass: the range is over.
    pub(super) fn over_before(&self, next: u64) -> bool {
        self.end.is_some_and(|e| next > e.group)
    }

    /// The objects of group `sequence` to send: the first, and the last if
    /// the range ends inside it.
    pub(super) fn objects(&self, sequence: u64) -> (u64, Option<u64>) {
        let first = match self.skip_to_start && sequence == self.start.group {
            true => self.start.object,
            false => 0,
        };
        let last = self
            .end
            .filter(|e| e.group == sequence)
            .and_then(|e| e.object);
        (first, last)
    }

    /// A draft-14 SUBSCRIBE_UPDATE's Start Location and End Group (the last
    /// group plus one, 0 for open ended). Draft 14 section 9.10: the start may
    /// not decrease, the end may not increase, and the end may not be before
    /// the start; any of these is a PROTOCOL_VIOLATION.
    pub(super) fn narrowed(&self, start: Location, end_group: u64) -> Result<Self, &'static str> {
        if start < self.start {
            return Err("SUBSCRIBE_UPDATE moved the start back");
        }
        let end = end_group.checked_sub(1).map(|group| End {
            group,
            object: None,
        });
        let widened = match (self.end, end) {
            (Some(_), None) => true,
            (Some(old), Some(new)) => new.group > old.group,
            (None, _) => false,
        };
        if widened {
            return Err("SUBSCRIBE_UPDATE moved the end forward");
        }
        if end.is_some_and(|e| e.group < start.group) {
            return Err("SUBSCRIBE_UPDATE ends before its start");
        }
        Ok(Window {
            // The live filters keep sending the newest group whole until the
            // start really moves.
            skip_to_start: self.skip_to_start || start != self.start,
            start,
            end,
        })
    }

    /// A draft-22 REQUEST_UPDATE's LOCATION_FILTER. Draft 22 lets an update
    /// move either bound either way (a later start skips groups, an earlier
    /// one resends nothing, a later end resumes delivery); the live filters
    /// open the end and leave the start. A range that ends before it starts
    /// is refused.
    pub(super) fn updated(&self, filter: LocationFilter) -> Result<Self, InvalidRange> {
        match filter {
            LocationFilter::None
            | LocationFilter::NextObject
            | LocationFilter::RelativeStart(_) => Ok(Window { end: None, ..*self }),
            LocationFilter::AbsoluteStart(start) => Ok(Window::open(start, true)),
            LocationFilter::AbsoluteGroupEnd { start, end_group } => Window::range(
                start,
                End {
                    group: end_group,
                    object: None,
                },
            ),
            LocationFilter::AbsoluteRange {
                start,
                end_group,
                end_object,
            } => Window::range(
                start,
                End {
                    group: end_group,
                    object: Some(end_object),
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(group: u64, object: u64) -> Location {
        Location { group, object }
    }

    #[test]
    fn the_live_filters_resolve_against_the_largest_object() {
        let largest = Some(loc(7, 3));
        let (w, first) = Window::draft14(Filter::LargestObject, largest).unwrap();
        assert_eq!((w.start, first), (loc(7, 4), First::Newest));
        // The newest group is sent whole, from object 0.
        assert_eq!(w.objects(7), (0, None));
        assert!(w.passes(7));
        let (w, first) = Window::draft14(Filter::NextGroupStart, largest).unwrap();
        assert_eq!((w.start, first), (loc(8, 0), First::From(8)));
        assert!(!w.passes(7));
        let (w, first) = Window::draft14(Filter::NextGroupStart, None).unwrap();
        assert_eq!((w.start, first), (loc(0, 0), First::Newest));
        let (w, first) = Window::draft22(LocationFilter::RelativeStart(2), largest).unwrap();
        assert_eq!((w.start, first), (loc(6, 0), First::From(6)));
        let (_, first) = Window::draft22(LocationFilter::RelativeStart(99), largest).unwrap();
        assert_eq!(first, First::From(0));
    }

    #[test]
    fn an_absolute_range_sends_from_its_start_object_to_its_end() {
        let range = Filter::AbsoluteRange {
            start: loc(5, 2),
            end_group: 9,
        };
        let (w, first) = Window::draft14(range, Some(loc(20, 0))).unwrap();
        assert_eq!(first, First::From(5));
        assert!(!w.passes(4) && w.passes(5) && w.passes(9) && !w.passes(10));
        assert_eq!(w.objects(5), (2, None));
        assert_eq!(w.objects(6), (0, None));
        assert!(!w.over_before(9) && w.over_before(10));
        // Draft 22 can end inside the last group.
        let filter = LocationFilter::AbsoluteRange {
            start: loc(5, 0),
            end_group: 6,
            end_object: 3,
        };
        let (w, _) = Window::draft22(filter, None).unwrap();
        assert_eq!(w.objects(6), (0, Some(3)));
        let (w, _) = Window::draft14(Filter::AbsoluteStart(loc(3, 1)), None).unwrap();
        assert!(w.end.is_none() && !w.over_before(u64::MAX));
    }

    #[test]
    fn a_range_that_ends_before_it_starts_is_an_invalid_range() {
        let range = Filter::AbsoluteRange {
            start: loc(5, 0),
            end_group: 4,
        };
        assert!(Window::draft14(range, None).is_err());
        let filter = LocationFilter::AbsoluteRange {
            start: loc(5, 4),
            end_group: 5,
            end_object: 3,
        };
        assert!(Window::draft22(filter, None).is_err());
    }

    #[test]
    fn a_draft_14_update_may_only_narrow() {
        let (w, _) = Window::draft14(
            Filter::AbsoluteRange {
                start: loc(5, 0),
                end_group: 9,
            },
            None,
        )
        .unwrap();
        // End Group is the last group plus one.
        let narrowed = w.narrowed(loc(6, 0), 8).unwrap();
        assert_eq!(narrowed.end.map(|e| e.group), Some(7));
        assert_eq!(narrowed.start, loc(6, 0));
        assert!(w.narrowed(loc(4, 0), 8).is_err(), "start moved back");
        assert!(w.narrowed(loc(5, 0), 11).is_err(), "end moved forward");
        assert!(w.narrowed(loc(5, 0), 0).is_err(), "end opened");
        assert!(w.narrowed(loc(8, 0), 8).is_err(), "end before start");
        // An open subscription may gain an end.
        let (open, _) = Window::draft14(Filter::LargestObject, Some(loc(3, 0))).unwrap();
        let same = open.narrowed(loc(3, 1), 0).unwrap();
        assert_eq!(
            same, open,
            "an update that changes nothing keeps the newest group whole"
        );
        let ended = open.narrowed(loc(3, 1), 5).unwrap();
        assert!(ended.over_before(5));
    }

    #[test]
    fn a_draft_22_update_may_move_either_bound() {
        let (w, _) = Window::draft22(
            LocationFilter::AbsoluteGroupEnd {
                start: loc(5, 0),
                end_group: 9,
            },
            None,
        )
        .unwrap();
        let wider = w
            .updated(LocationFilter::AbsoluteGroupEnd {
                start: loc(5, 0),
                end_group: 20,
            })
            .unwrap();
        assert!(wider.passes(20));
        assert_eq!(w.updated(LocationFilter::NextObject).unwrap().end, None);
        assert!(w
            .updated(LocationFilter::AbsoluteRange {
                start: loc(9, 5),
                end_group: 9,
                end_object: 1,
            })
            .is_err());
    }
}
