//! Reading an aggregate's stored events back: every event of its stream decodes through the
//! event type's upcasters into the aggregate's event enum, or fails with an error that names the
//! stream, the version and what to do.

use super::definition::Aggregate;
use crate::envelope::RecordedEvent;
use crate::error::{Decider, Error};
use crate::event::EventSet;
use crate::event::upcast::DecodeError;

/// Decodes one stored event of aggregate (or decision, `decider`) `A` through its upcasters: the
/// replay of an instance and the lookup of a re-sent command both read with it.
pub(crate) fn decode<A: Aggregate>(
    recorded: &RecordedEvent,
    decider: Decider,
) -> Result<A::Event, Error> {
    decode_known::<A>(recorded)?.ok_or_else(|| Error::UnknownEventType {
        decider,
        aggregate: A::NAME,
        stream: recorded.stream_id().to_owned(),
        version: recorded.stream_version,
        event_type: recorded.event_type.to_string(),
    })
}

/// Decodes one stored event into `A`'s event enum, `None` when `A` has no event stored under
/// its type name (a decision's query may select events its model does not apply).
pub(crate) fn decode_known<A: Aggregate>(
    recorded: &RecordedEvent,
) -> Result<Option<A::Event>, Error> {
    match A::Event::decode_stored(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.data,
    ) {
        Ok(event) => Ok(event),
        Err(DecodeError::Upcast(source)) => Err(Error::Upcast {
            stream: recorded.stream_id().to_owned(),
            version: recorded.stream_version,
            source,
        }),
        Err(DecodeError::Data(error)) => Err(Error::Decode {
            stream: recorded.stream_id().to_owned(),
            version: recorded.stream_version,
            event_type: recorded.event_type.to_string(),
            schema_version: recorded.schema_version,
            reason: error.to_string(),
        }),
    }
}
