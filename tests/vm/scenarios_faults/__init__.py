"""Guest-side fault scenarios of the reliability campaign (issue 8); see tests/vm/test_vm_faults.py."""
