//! Any LISP control message (UDP port 4342), dispatched on the 4-bit type field.

use crate::buf::{Reader, Writer};
use crate::ecm::Ecm;
use crate::error::{Error, Result};
use crate::info::InfoMessage;
use crate::map_notify::MapNotify;
use crate::map_referral::MapReferral;
use crate::map_register::MapRegister;
use crate::map_reply::MapReply;
use crate::map_request::MapRequest;
use crate::shared_ext::SharedExtension;

/// LISP control message type codes (RFC 9301 §5.1, RFC 8111, RFC 9304).
pub mod message_type {
    pub const MAP_REQUEST: u8 = 1;
    pub const MAP_REPLY: u8 = 2;
    pub const MAP_REGISTER: u8 = 3;
    pub const MAP_NOTIFY: u8 = 4;
    pub const MAP_NOTIFY_ACK: u8 = 5;
    pub const MAP_REFERRAL: u8 = 6;
    pub const INFO: u8 = 7;
    pub const ECM: u8 = 8;
    pub const SHARED_EXTENSION: u8 = 15;
}

/// The type code of a control message, without decoding it.
pub fn peek_type(buf: &[u8]) -> Result<u8> {
    buf.first().map(|b| b >> 4).ok_or(Error::Truncated { what: "message type", at: 0, need: 1 })
}

/// One decoded control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    MapRequest(MapRequest),
    MapReply(MapReply),
    MapRegister(MapRegister),
    /// Map-Notify (type 4) or Map-Notify-Ack (type 5, `ack` set).
    MapNotify(MapNotify),
    MapReferral(MapReferral),
    /// Info-Request or Info-Reply (NAT traversal).
    Info(InfoMessage),
    Ecm(Ecm),
    SharedExtension(SharedExtension),
}

impl ControlMessage {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        use message_type::*;
        Ok(match peek_type(r.rest())? {
            MAP_REQUEST => ControlMessage::MapRequest(MapRequest::read(r)?),
            MAP_REPLY => ControlMessage::MapReply(MapReply::read(r)?),
            MAP_REGISTER => ControlMessage::MapRegister(MapRegister::read(r)?),
            MAP_NOTIFY | MAP_NOTIFY_ACK => ControlMessage::MapNotify(MapNotify::read(r)?),
            MAP_REFERRAL => ControlMessage::MapReferral(MapReferral::read(r)?),
            INFO => ControlMessage::Info(InfoMessage::read(r)?),
            ECM => ControlMessage::Ecm(Ecm::read(r)?),
            SHARED_EXTENSION => ControlMessage::SharedExtension(SharedExtension::read(r)?),
            found => return Err(Error::UnknownType { found }),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        match self {
            ControlMessage::MapRequest(m) => m.write(w),
            ControlMessage::MapReply(m) => m.write(w),
            ControlMessage::MapRegister(m) => m.write(w),
            ControlMessage::MapNotify(m) => m.write(w),
            ControlMessage::MapReferral(m) => m.write(w),
            ControlMessage::Info(m) => m.write(w),
            ControlMessage::Ecm(m) => m.write(w),
            ControlMessage::SharedExtension(m) => m.write(w),
        }
    }

    pub fn wire_len(&self) -> usize {
        match self {
            ControlMessage::MapRequest(m) => m.wire_len(),
            ControlMessage::MapReply(m) => m.wire_len(),
            ControlMessage::MapRegister(m) => m.wire_len(),
            ControlMessage::MapNotify(m) => m.wire_len(),
            ControlMessage::MapReferral(m) => m.wire_len(),
            ControlMessage::Info(m) => m.wire_len(),
            ControlMessage::Ecm(m) => m.wire_len(),
            ControlMessage::SharedExtension(m) => m.wire_len(),
        }
    }

    /// The message's name as operators know it.
    pub fn name(&self) -> &'static str {
        match self {
            ControlMessage::MapRequest(_) => "Map-Request",
            ControlMessage::MapReply(_) => "Map-Reply",
            ControlMessage::MapRegister(_) => "Map-Register",
            ControlMessage::MapNotify(m) if m.ack => "Map-Notify-Ack",
            ControlMessage::MapNotify(_) => "Map-Notify",
            ControlMessage::MapReferral(_) => "Map-Referral",
            ControlMessage::Info(m) if m.reply => "Info-Reply",
            ControlMessage::Info(_) => "Info-Request",
            ControlMessage::Ecm(_) => "Encapsulated-Control-Message",
            ControlMessage::SharedExtension(_) => "Shared-Extension",
        }
    }
}

crate::buf::impl_wire!(ControlMessage);
