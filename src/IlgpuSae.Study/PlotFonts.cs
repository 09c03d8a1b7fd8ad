using ScottPlot;
using SkiaSharp;

namespace IlgpuSae.Study;

/// <summary>
/// The font every plot of IlgpuSae uses: DejaVu Sans, embedded in this assembly (see
/// Fonts/LICENSE-DejaVu.txt),
/// so that titles, axes and legends render on machines with no fonts installed (minimal containers, chroots,
/// CI),
/// where ScottPlot would otherwise draw the plot without any text.
/// </summary>
public static class PlotFonts
{
    /// <summary>The family name the embedded font is registered under.</summary>
    public const string Name = "IlgpuSae DejaVu Sans";

    private static readonly Lazy<byte[]> FontBytes = new(() =>
    {
        using var stream =
            typeof(PlotFonts).Assembly.GetManifestResourceStream("IlgpuSae.Study.Fonts.DejaVuSans.ttf")
            ?? throw new InvalidOperationException(
                "The embedded plot font is missing from the IlgpuSae assembly."
            );
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        return copy.ToArray();
    });

    private static readonly Lock Gate = new();
    private static bool _registered;

    /// <summary>Registers the embedded font with ScottPlot (once per process) and sets it on every text
    /// element of <paramref name="plot"/>.</summary>
    public static void Apply(Plot plot)
    {
        ArgumentNullException.ThrowIfNull(plot);
        lock (Gate)
        {
            if (!_registered)
            {
                Fonts.FontResolvers.Insert(0, new EmbeddedResolver());
                _registered = true;
            }
        }

        plot.Font.Set(Name);
    }

    /// <summary>A new typeface of the embedded font.</summary>
    public static SKTypeface CreateTypeface()
    {
        using var data = SKData.CreateCopy(FontBytes.Value);
        return SKTypeface.FromData(data)
            ?? throw new InvalidOperationException("The embedded plot font could not be read.");
    }

    private sealed class EmbeddedResolver : IFontResolver
    {
        public SKTypeface? CreateTypeface(
            string fontName,
            FontWeight weight,
            FontSlant slant,
            FontSpacing spacing
        ) => fontName == Name ? PlotFonts.CreateTypeface() : null;

        public SKTypeface? CreateTypeface(string fontName, bool bold, bool italic) =>
            fontName == Name ? PlotFonts.CreateTypeface() : null;
    }
}
