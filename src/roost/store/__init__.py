"""Where session state and messages outlive the process (see :mod:`roost.store.base`)."""
