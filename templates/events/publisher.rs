{{ header }}
//! The publisher: one typed method per event this service produces.

/// Publishes this service's events, each validated against its JSON
/// Schema and confirmed by the broker before the call returns.
///
/// Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct Publisher {
    broker: crate::Broker,
}

impl Publisher {
    /// A publisher over a connected broker.
    pub fn new(broker: crate::Broker) -> Self {
        Publisher { broker }
    }

    /// The broker this publisher sends to.
    pub fn broker(&self) -> &crate::Broker {
        &self.broker
    }

    /// Publish a prepared envelope (from an outbox, a replay tool or a
    /// bridge). Its type must be an event this service produces and its
    /// data must match that event's schema.
    pub async fn publish_envelope(
        &self,
        envelope: &crate::Envelope,
    ) -> ::std::result::Result<(), crate::Error> {
        check_envelope(envelope)?;
        self.broker.publish(envelope).await
    }

    /// Publish prepared envelopes in order with the broker's confirms
    /// pipelined; see [`Publisher::publish_envelope`].
    pub async fn publish_envelopes(
        &self,
        envelopes: &[crate::Envelope],
    ) -> ::std::result::Result<(), crate::Error> {
        for envelope in envelopes {
            check_envelope(envelope)?;
        }
        self.broker.publish_many(envelopes).await
    }
{% for e in produced %}
    /// Publish `{{ e.name }}` (version {{ e.version }}).
{%- for l in e.doc %}
    ///{% if !l.is_empty() %} {{ l }}{% endif %}
{%- endfor %}
    ///
    /// Returns the envelope once the broker has confirmed the message.
    pub async fn {{ e.method }}(
        &self,
        event: &crate::types::{{ e.type_name }},
    ) -> ::std::result::Result<crate::Envelope, crate::Error> {
        self.publish(event).await
    }

    /// Publish many `{{ e.name }}` events in order, with the broker's
    /// confirms pipelined: much faster than one call per event. Returns the
    /// envelopes once every message is confirmed.
    pub async fn {{ e.method }}_batch(
        &self,
        events: &[crate::types::{{ e.type_name }}],
    ) -> ::std::result::Result<::std::vec::Vec<crate::Envelope>, crate::Error> {
        self.publish_batch(events).await
    }
{% endfor %}
{%- if produced.is_empty() %}
    /// This service produces no events: every name is refused.
    pub async fn publish_json(
        &self,
        name: &str,
        data: ::serde_json::Value,
    ) -> ::std::result::Result<crate::Envelope, crate::Error> {
        let _ = (&self.broker, data);
        Err(crate::Error::UnknownEvent(name.to_string()))
    }
{%- else %}
    /// Publish a produced event given by name as JSON (for HTTP handlers
    /// and tools): validated against its schema, then typed.
    pub async fn publish_json(
        &self,
        name: &str,
        data: ::serde_json::Value,
    ) -> ::std::result::Result<crate::Envelope, crate::Error> {
        crate::schemas::validate(name, &data)?;
        match name {
{%- for e in produced %}
            {{ e.name_lit }} => {
                let event: crate::types::{{ e.type_name }} = ::serde_json::from_value(data)?;
                self.publish(&event).await
            }
{%- endfor %}
            _ => Err(crate::Error::UnknownEvent(name.to_string())),
        }
    }

    async fn publish<E: crate::Event>(
        &self,
        event: &E,
    ) -> ::std::result::Result<crate::Envelope, crate::Error> {
        let data = ::serde_json::to_value(event)?;
        crate::schemas::validate(E::NAME, &data)?;
        let envelope = crate::Envelope::new(E::NAME, E::VERSION, event.key(), data);
        self.broker.publish(&envelope).await?;
        Ok(envelope)
    }

    async fn publish_batch<E: crate::Event>(
        &self,
        events: &[E],
    ) -> ::std::result::Result<::std::vec::Vec<crate::Envelope>, crate::Error> {
        let mut envelopes = ::std::vec::Vec::with_capacity(events.len());
        for event in events {
            let data = ::serde_json::to_value(event)?;
            crate::schemas::validate(E::NAME, &data)?;
            envelopes.push(crate::Envelope::new(E::NAME, E::VERSION, event.key(), data));
        }
        self.broker.publish_many(&envelopes).await?;
        Ok(envelopes)
    }
{%- endif %}
}

fn check_envelope(envelope: &crate::Envelope) -> ::std::result::Result<(), crate::Error> {
    if !crate::PRODUCES.contains(&envelope.kind.as_str()) {
        return Err(crate::Error::UnknownEvent(envelope.kind.clone()));
    }
    crate::schemas::validate(&envelope.kind, &envelope.data)
}
