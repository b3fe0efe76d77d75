"""USB backends: the transport (the only pyusb user), mass storage (``usb-msc:``), and the
phone protocols that build on the same transport (``edl:``, ``fastboot:``)."""
