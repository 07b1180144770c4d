//! Network-namespace lab used by the privileged tests and the demo.
