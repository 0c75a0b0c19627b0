package volume

// HoldOff is holdOff, for the tests.
var HoldOff = holdOff
