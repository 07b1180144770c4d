//! Socket addresses as the kernel programs record them.

/// `AF_INET`.
pub const AF_INET: u8 = 2;
/// `AF_INET6`.
pub const AF_INET6: u8 = 10;

/// Both ends of a TCP socket. IPv4 addresses sit in the first four bytes of the 16-byte arrays.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockTuple {
    /// `AF_INET`, `AF_INET6`, or 0 when unknown.
    pub family: u8,
    pub _pad: [u8; 3],
    /// Local port, host byte order.
    pub lport: u16,
    /// Remote port, host byte order.
    pub rport: u16,
    /// Local address, network byte order.
    pub laddr: [u8; 16],
    /// Remote address, network byte order.
    pub raddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<SockTuple>() == 40);

/// Key of the map that finds a watched socket from a packet's addresses (kernel drops happen
/// before socket lookup, so the dropped packet carries no socket pointer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub lport: u16,
    pub rport: u16,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

crate::impl_pod!(SockTuple, FlowKey);
