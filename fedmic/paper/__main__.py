"""`python -m fedmic.paper`: rewrite the files made from the table and figure modules."""
import sys

from fedmic.paper import main

sys.exit(main())
