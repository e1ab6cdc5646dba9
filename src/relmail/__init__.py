"""relmail: campaign relevance and e-mail personalisation.

The pipeline is store → features → score → rules → arbitration → render →
deliver → feedback; each stage is a module with a narrow interface, and the
``relmail`` command line is a thin layer over these functions.
"""

__version__ = "0.1.0"
