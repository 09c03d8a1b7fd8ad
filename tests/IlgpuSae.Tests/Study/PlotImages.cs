namespace IlgpuSae.Tests.Study;

/// <summary>Checks on the PNG plots the study writes.</summary>
public static class PlotImages
{
    /// <summary>Pixels darker than mid-grey in the top 24 rows of a plot, where only the title is
    /// drawn.</summary>
    public static int DarkPixelsInTitleStrip(string png)
    {
        using var bitmap = SkiaSharp.SKBitmap.Decode(png);
        int dark = 0;
        for (int y = 0; y < 24; y++)
        {
            for (int x = 0; x < bitmap.Width; x++)
            {
                var c = bitmap.GetPixel(x, y);
                dark += c.Red + c.Green + c.Blue < 3 * 110 ? 1 : 0;
            }
        }

        return dark;
    }
}
