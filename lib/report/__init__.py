"""The academic report: figures, numbered tables, prose written from the run's numbers, rendering.

    plots        every figure of the notebooks and the report
    document     escaped data, numbered figures and tables, numbers in words
    render       the executed report notebook as HTML (nbconvert) and PDF (WeasyPrint)
    sections     the report's wording (HTML), from the run's artefacts
    tables       the protocol as configured, the statistics, the methods, the steps: as tables
    references   the works a report cites
    report.css   the report's page style (HTML and PDF)
"""
