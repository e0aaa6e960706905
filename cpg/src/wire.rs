//! DFSM wire formats (being written).
