//! Your event handlers: one method per consumed event.
//!
//! This file is yours: evgen wrote it once and never touches it again.
//! When the catalog gains a consumed event, the compiler names the method
//! to add here.

use {{ events_mod }} as events;

/// State shared by every handler: database pools, clients, caches.
#[derive(Default)]
pub struct App {}

impl events::Handlers for App {
{%- if handlers.is_empty() %}}{% else %}
{%- for h in handlers %}
{{ h }}
{%- endfor %}
}{% endif %}
